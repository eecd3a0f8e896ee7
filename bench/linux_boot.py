#!/usr/bin/env python3
"""Boots the default guest under each VMM and times it, on this machine's KVM.

For each VMM: from spawn to the kernel's first console line ("Linux version"), to
SKVM-GUEST-READY (the initramfs's shell is up), then types `poweroff -f` and waits
for the VMM to exit. Peak RSS is measured in separate runs under /usr/bin/time.
Same kernel, initramfs and command line for all. Prints medians and ratios.

    linux_boot.py --kernel K --initrd I --skvm PATH [--runs N]
"""
import argparse
import os
import select
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

COMMAND_LINE = "console=ttyS0 panic=-1"


def commands(arguments):
    qemu = shutil.which("qemu-system-x86_64")
    common = ["-enable-kvm", "-cpu", "host", "-m", "256", "-smp", "1", "-nodefaults", "-no-user-config",
              "-display", "none", "-serial", "stdio", "-monitor", "none", "-no-reboot",
              "-kernel", arguments.kernel, "-initrd", arguments.initrd, "-append", COMMAND_LINE]
    return {
        "skvm": [arguments.skvm, "run", "--kernel", arguments.kernel, "--initrd", arguments.initrd,
                 "--cmdline", COMMAND_LINE, "--memory", "256M"],
        "qemu-microvm": [qemu, "-M", "microvm,rtc=on"] + common,
        "qemu-q35": [qemu, "-M", "q35"] + common,
    }


def boot_once(command, timeout=120):
    start = time.perf_counter()
    process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    output, first_line, ready = b"", None, None
    deadline = start + timeout
    while time.perf_counter() < deadline:
        if select.select([process.stdout], [], [], 0.5)[0]:
            chunk = os.read(process.stdout.fileno(), 65536)
            if not chunk:
                break
            output += chunk
            now = time.perf_counter()
            if first_line is None and b"Linux version" in output:
                first_line = now - start
            if ready is None and b"SKVM-GUEST-READY" in output:
                ready = now - start
                process.stdin.write(b"poweroff -f\n")
                process.stdin.flush()
        if process.poll() is not None:
            break
    if process.poll() is None:
        process.kill()
    process.wait()
    end = time.perf_counter() - start
    if first_line is None or ready is None or process.returncode != 0:
        tail = output[-600:].decode(errors="replace")
        raise RuntimeError(f"{command[0]}: status {process.returncode}, first line {first_line}, ready {ready}:\n{tail}")
    return {"first_line_ms": first_line * 1e3, "ready_ms": ready * 1e3, "total_ms": end * 1e3}


def peak_rss_mib(command, timeout=120):
    with tempfile.NamedTemporaryFile("r") as report:
        process = subprocess.Popen(["/usr/bin/time", "-f", "%M", "-o", report.name] + command,
                                   stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        output = b""
        deadline = time.perf_counter() + timeout
        while process.poll() is None:
            if time.perf_counter() > deadline:
                process.kill()
                process.wait()
                raise RuntimeError(f"{command[0]}: no SKVM-GUEST-READY within {timeout} s while measuring RSS")
            if select.select([process.stdout], [], [], 0.5)[0]:
                chunk = os.read(process.stdout.fileno(), 65536)
                output += chunk
                if b"SKVM-GUEST-READY" in output:
                    process.stdin.write(b"poweroff -f\n")
                    process.stdin.flush()
                    output = b""
        return int(report.read().split()[-1]) / 1024


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--kernel", required=True)
    parser.add_argument("--initrd", required=True)
    parser.add_argument("--skvm", required=True)
    parser.add_argument("--runs", type=int, default=5)
    arguments = parser.parse_args()
    results = {}
    for name, command in commands(arguments).items():
        samples = []
        for run in range(arguments.runs):
            samples.append(boot_once(command))
            print(f"  {name} boot {run + 1}: ready after {samples[-1]['ready_ms']:.0f} ms", file=sys.stderr, flush=True)
        results[name] = {key: statistics.median(s[key] for s in samples) for key in samples[0]}
        results[name]["rss_mib"] = peak_rss_mib(command)
        print(f"  measured {name}: {arguments.runs} boots", file=sys.stderr, flush=True)
    print(f"\nLinux boot, medians of {arguments.runs} (kernel command line: {COMMAND_LINE!r})\n")
    print(f"{'':<14}{'first line':>12}{'ready':>12}{'to exit':>12}{'peak RSS':>12}")
    for name, r in results.items():
        print(f"{name:<14}{r['first_line_ms']:>9.0f} ms{r['ready_ms']:>9.0f} ms{r['total_ms']:>9.0f} ms"
              f"{r['rss_mib']:>8.1f} MiB")
    skvm = results["skvm"]
    print()
    for name, r in results.items():
        if name != "skvm":
            print(f"skvm / {name}: first line {skvm['first_line_ms'] / r['first_line_ms']:.2f}×, "
                  f"ready {skvm['ready_ms'] / r['ready_ms']:.2f}×, RSS {skvm['rss_mib'] / r['rss_mib']:.2f}×")


if __name__ == "__main__":
    main()
