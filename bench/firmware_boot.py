#!/usr/bin/env python3
"""Firmware boot of an ISO under skvm and QEMU 7.2 with the same SeaBIOS, on this machine's KVM.

The ISO (grub-mkrescue: GRUB on the serial console, timeout 0) carries the default guest's
kernel and initramfs. For each VMM: from spawn to the boot loader's first line (GRUB's echo
before it loads the kernel) and to SKVM-GUEST-READY (the shell), then `poweroff -f`.
skvm boots the ISO from its CD-ROM drive (virtio-scsi) and as a disk (virtio-blk); QEMU
from its CD-ROM on q35 (AHCI) and pc (IDE). Prints medians and ratios.

    firmware_boot.py --kernel K --initrd I --skvm PATH [--runs N] [--boot-timeout S]
"""
import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile

from linux_boot import boot_once
from results import report

BIOS = "/usr/share/seabios/bios-256k.bin"
LOADER_LINE = b"GRUB-LOADS-THE-KERNEL"


def make_iso(kernel, initrd, directory):
    root = os.path.join(directory, "iso")
    os.makedirs(os.path.join(root, "boot", "grub"))
    shutil.copy(kernel, os.path.join(root, "boot", "vmlinuz"))
    shutil.copy(initrd, os.path.join(root, "boot", "initrd.gz"))
    with open(os.path.join(root, "boot", "grub", "grub.cfg"), "w") as menu:
        menu.write("serial --unit=0 --speed=115200\nterminal_input serial\nterminal_output serial\n"
                   "set timeout=0\nmenuentry \"skvm default guest\" {\n  echo \"GRUB-LOADS-THE-KERNEL\"\n"
                   "  linux /boot/vmlinuz console=ttyS0 quiet panic=-1\n  initrd /boot/initrd.gz\n}\n")
    path = os.path.join(directory, "guest.iso")
    subprocess.run(["grub-mkrescue", "-o", path, root], check=True, capture_output=True)
    return path


def commands(arguments, iso):
    qemu = shutil.which("qemu-system-x86_64")

    def qemu_command(machine):
        return [qemu, "-M", f"{machine},graphics=off", "-enable-kvm", "-cpu", "host", "-m", "256", "-smp", "1",
                "-nodefaults", "-no-user-config", "-display", "none", "-serial", "stdio", "-monitor", "none",
                "-bios", BIOS, "-cdrom", iso, "-boot", "d", "-no-reboot"]

    skvm = [arguments.skvm, "run", "--memory", "256M", "--net", "none", "--bios", BIOS]
    return {
        "skvm-cdrom": skvm + ["--cdrom", iso, "--boot", "order=d"],
        "skvm-disk": skvm + ["--disk", f"{iso},readonly=on", "--boot", "order=c"],
        "qemu-q35": qemu_command("q35"),
        "qemu-pc": qemu_command("pc"),
    }


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--kernel", required=True)
    parser.add_argument("--initrd", required=True)
    parser.add_argument("--skvm", required=True)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--boot-timeout", type=float, default=240)
    arguments = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory:
        iso = make_iso(arguments.kernel, arguments.initrd, directory)
        samples = {name: [] for name in commands(arguments, iso)}
        troubles = {name: 0 for name in samples}
        # Interleaved, so drift in the host hits every VMM alike.
        for run in range(arguments.runs):
            for name, command in commands(arguments, iso).items():
                try:
                    boot = boot_once(command, arguments.boot_timeout, first_marker=LOADER_LINE)
                    samples[name].append({"loader_ms": boot["first_line_ms"], "ready_ms": boot["ready_ms"]})
                    print(f"  {name} boot {run + 1}: boot loader after {samples[name][-1]['loader_ms']:.0f} ms, "
                          f"shell after {samples[name][-1]['ready_ms']:.0f} ms", file=sys.stderr, flush=True)
                except RuntimeError as error:
                    troubles[name] += 1
                    print(f"  {name} boot {run + 1}: FAILED: {error}", file=sys.stderr, flush=True)
    results = {name: {key: statistics.median(s[key] for s in runs) for key in runs[0]}
               for name, runs in samples.items() if runs}
    print(f"\nFirmware boot of a GRUB ISO (SeaBIOS {BIOS}), medians of {arguments.runs}\n")
    print(f"{'':<14}{'boot loader':>14}{'shell':>12}{'failed':>8}")
    for name in samples:
        r = results.get(name)
        figures = f"{r['loader_ms']:>11.0f} ms{r['ready_ms']:>9.0f} ms" if r else f"{'no boot finished':>26}"
        print(f"{name:<14}{figures}{troubles[name]:>8}")
    print()
    for ours in ("skvm-cdrom", "skvm-disk"):
        mine = results.get(ours)
        for peer in ("qemu-q35", "qemu-pc"):
            r = results.get(peer)
            if mine and r:
                print(f"{ours} / {peer}: boot loader {mine['loader_ms'] / r['loader_ms']:.2f}×, "
                      f"shell {mine['ready_ms'] / r['ready_ms']:.2f}×")
    mine = results.get("skvm-cdrom")
    report("firmware boot to the boot loader (ISO on CD-ROM)", "ms", mine["loader_ms"] if mine else None,
           {peer: results[peer]["loader_ms"] for peer in ("qemu-q35", "qemu-pc") if peer in results}, ratio_goal=0.8)


if __name__ == "__main__":
    main()
