#!/usr/bin/env python3
"""Streams seeded pseudo-random bytes to HOST:PORT over TCP, a mebibyte at a time with a pause
after each, retrying the connection until the receiver listens — traffic that keeps landing in
a guest's memory while it migrates. The receiver's md5 must equal what `--md5-only` prints.

  stream_sender.py HOST PORT [--mebibytes N] [--interval SECONDS] [--md5-only]
"""
import argparse
import hashlib
import random
import socket
import sys
import time


def blocks(count):
    generator = random.Random(20261201)
    for _ in range(count):
        yield generator.randbytes(1 << 20)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("host")
    parser.add_argument("port", type=int)
    parser.add_argument("--mebibytes", type=int, default=32)
    parser.add_argument("--interval", type=float, default=0.25)
    parser.add_argument("--md5-only", action="store_true")
    args = parser.parse_args()
    digest = hashlib.md5()
    if args.md5_only:
        for block in blocks(args.mebibytes):
            digest.update(block)
        print(digest.hexdigest())
        return
    deadline = time.monotonic() + 300
    while True:
        try:
            connection = socket.create_connection((args.host, args.port), timeout=5)
            break
        except OSError:
            if time.monotonic() > deadline:
                sys.exit(f"stream_sender: {args.host}:{args.port} never listened")
            time.sleep(0.5)
    connection.settimeout(120)
    for block in blocks(args.mebibytes):
        digest.update(block)
        connection.sendall(block)
        time.sleep(args.interval)
    connection.close()
    print(f"stream_sender: sent {args.mebibytes} MiB, md5 {digest.hexdigest()}", flush=True)


if __name__ == "__main__":
    main()
