#!/usr/bin/env python3
"""Wraps a position-independent 16-bit guest into a 64 KiB QEMU -bios image: the guest
at the image's start (0xF0000) and, at the reset vector 0xFFFF0, a far jump to F000:0000.

  bench/make_bios.py GUEST.bin BIOS.bin
"""
import sys

guest = open(sys.argv[1], "rb").read()
image = bytearray(b"\xf4" * 65536)
image[: len(guest)] = guest
image[0xFFF0:0xFFF5] = b"\xea\x00\x00\x00\xf0"
open(sys.argv[2], "wb").write(image)
