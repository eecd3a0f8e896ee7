#!/usr/bin/env python3
"""dd through virtio-blk in the default guest, skvm against QEMU q35 (with and without an
iothread for the disk, QEMU's best configuration for block I/O) on this machine's KVM.

Boots each VMM with the same raw image as /dev/vda (host page cache on both: skvm
cache=writeback, QEMU cache=writeback aio=threads), waits for SKVM-GUEST-READY, then runs
O_DIRECT dd in the guest: sequential 1 MiB reads and writes (the disk four times over), and
4 KiB reads, one reader (queue depth 1) and 32 at once (depth 32). Each is timed on the
host from sending the command to its end marker. Each run boots the VMMs in a rotated
order. Prints medians, MiB/s and ratios.

    linux_dd.py --kernel K --initrd I --skvm PATH --image RAW [--runs N] [--mebibytes M]
"""
import argparse
import shutil
import statistics
import subprocess
import sys
import time

from guest_console import Guest
from results import report

COMMAND_LINE = "console=ttyS0 quiet panic=-1"


def commands(arguments):
    qemu = shutil.which("qemu-system-x86_64")
    q35 = [qemu, "-M", "q35", "-enable-kvm", "-cpu", "host", "-m", "256", "-smp", "1", "-nodefaults",
           "-no-user-config", "-display", "none", "-serial", "stdio", "-monitor", "none", "-no-reboot",
           "-kernel", arguments.kernel, "-initrd", arguments.initrd, "-append", COMMAND_LINE,
           "-drive", f"file={arguments.image},format=raw,if=none,id=d0,cache=writeback,aio=threads"]
    return {
        "skvm": [arguments.skvm, "run", "--kernel", arguments.kernel, "--initrd", arguments.initrd,
                 "--cmdline", COMMAND_LINE, "--memory", "256M", "--disk", f"{arguments.image},format=raw"],
        "qemu-q35": q35 + ["-device", "virtio-blk-pci,drive=d0"],
        # QEMU's best configuration for block I/O: the device's queue served by an iothread.
        "qemu-iothread": q35 + ["-object", "iothread,id=io0", "-device", "virtio-blk-pci,drive=d0,iothread=io0"],
    }


def phases(mebibytes):
    return [
        # The disk four times over: a pass takes well under a second in the lane, about as
        # long as the console's round trip that every phase's time includes.
        ("seq-read-1M", 4 * mebibytes << 20,
         f"for pass in 1 2 3 4; do dd if=/dev/vda of=/dev/null bs=1M count={mebibytes} iflag=direct; done"),
        ("seq-write-1M", 4 * mebibytes << 20,
         f"for pass in 1 2 3 4; do dd if=/dev/zero of=/dev/vda bs=1M count={mebibytes} oflag=direct; done"),
        ("read-4K", mebibytes << 20, f"dd if=/dev/vda of=/dev/null bs=4K count={mebibytes * 256} iflag=direct"),
        # 32 readers at once, each its own stretch of the disk: a queue 32 deep.
        ("read-4K-qd32", mebibytes << 20,
         f"i=0; while [ $i -lt 32 ]; do dd if=/dev/vda of=/dev/null bs=4K count={mebibytes * 8} "
         f"skip=$((i * {mebibytes * 8})) iflag=direct 2>/dev/null & i=$((i + 1)); done; wait"),
    ]


def run_once(command, mebibytes):
    guest = Guest(command)
    try:
        guest.wait_for(b"SKVM-GUEST-READY")
        times = {}
        for number, (name, _, line) in enumerate(phases(mebibytes)):
            # The marker is computed in the guest, so the echoed command line never matches it.
            start = time.perf_counter()
            guest.send(f"{line} 2>/dev/null; echo PHASE-$(({number} + 100))-DONE")
            times[name] = guest.wait_for(f"PHASE-{number + 100}-DONE".encode())[0] - start
        return times
    finally:
        guest.close()


def main():
    parser = argparse.ArgumentParser()
    for option in ("--kernel", "--initrd", "--skvm", "--image"):
        parser.add_argument(option, required=True)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--mebibytes", type=int, default=64)
    arguments = parser.parse_args()
    samples = {name: [] for name in commands(arguments)}
    for run in range(arguments.runs):
        # Each run starts with the next VMM in turn: in the lane a boot's speed depends on the
        # outer VM's state (identical binaries measured 0.88 and 1.32 s for the same 96 MiB
        # read in consecutive boots; the first boot after the lane starts is the fastest), so a
        # fixed order would favour whichever VMM always boots first.
        names = list(commands(arguments))
        for name in names[run % len(names):] + names[:run % len(names)]:
            command = commands(arguments)[name]
            samples[name].append(run_once(command, arguments.mebibytes))
            print(f"  {name} run {run + 1}: {samples[name][-1]}", file=sys.stderr, flush=True)
    print(f"\ndd in the default guest, medians of {arguments.runs} ({arguments.mebibytes} MiB each; "
          "ratio > 1: skvm faster)\n")
    print(f"{'phase':<14}{'vmm':<10}{'seconds':>10}{'MiB/s':>10}{'IOPS':>10}{'ratio':>8}")
    for name, size, line in phases(arguments.mebibytes):
        block = 1 << 20 if "bs=1M" in line else 4096
        medians = {vmm: statistics.median(s[name] for s in runs) for vmm, runs in samples.items()}
        for vmm, seconds in medians.items():
            print(f"{name:<14}{vmm:<10}{seconds:>10.2f}{size / seconds / 2**20:>10.1f}"
                  f"{size / block / seconds:>10.0f}{medians[vmm] / medians['skvm']:>8.2f}")
        throughput = {vmm: size / seconds / 2**20 for vmm, seconds in medians.items()}
        report(f"dd in the default guest: {name}", "MiB/s", throughput.pop("skvm"), throughput, better="higher",
               ratio_goal=1.0)


if __name__ == "__main__":
    main()
