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

from results import report

COMMAND_LINE = "console=ttyS0 panic=-1"


QUIET_COMMAND_LINE = COMMAND_LINE + " quiet"


def commands(arguments):
    """Each VMM with the verbose command line, and skvm and QEMU's fastest Linux boot (microvm
    with an RTC) with `quiet` too: every console byte is an exit, so quiet boots are faster."""
    qemu = shutil.which("qemu-system-x86_64")

    def qemu_command(machine, line):
        return [qemu, "-M", machine, "-enable-kvm", "-cpu", "host", "-m", "256", "-smp", "1", "-nodefaults",
                "-no-user-config", "-display", "none", "-serial", "stdio", "-monitor", "none", "-no-reboot",
                "-kernel", arguments.kernel, "-initrd", arguments.initrd, "-append", line]

    def skvm_command(line):
        return [arguments.skvm, "run", "--kernel", arguments.kernel, "--initrd", arguments.initrd,
                "--cmdline", line, "--memory", "256M"]

    return {
        "skvm": skvm_command(COMMAND_LINE),
        "qemu-microvm": qemu_command("microvm,rtc=on", COMMAND_LINE),
        "qemu-q35": qemu_command("q35", COMMAND_LINE),
        "skvm-quiet": skvm_command(QUIET_COMMAND_LINE),
        "qemu-microvm-quiet": qemu_command("microvm,rtc=on", QUIET_COMMAND_LINE),
    }


class Stalled(RuntimeError):
    """A boot that did not reach SKVM-GUEST-READY (or exit) within its time limit; first_line_ms
    says when it printed its first line, if it did."""

    def __init__(self, message, first_line_ms=None):
        super().__init__(message)
        self.first_line_ms = first_line_ms


def boot_once(command, timeout=120, first_marker=b"Linux version", ready_marker=b"SKVM-GUEST-READY",
              on_ready=b"poweroff -f\n"):
    """One boot: times to `first_marker` (the kernel's first line by default) and to `ready_marker`
    (the default guest's shell), where `on_ready` is typed (None: the VMM is killed instead)."""
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
            if first_line is None and first_marker in output:
                first_line = now - start
            if ready is None and ready_marker in output:
                ready = now - start
                if on_ready is None:
                    process.kill()
                    process.wait()
                    break
                process.stdin.write(on_ready)
                process.stdin.flush()
        if process.poll() is not None:
            break
    if process.poll() is None:
        process.kill()
    process.wait()
    end = time.perf_counter() - start
    if ready is None and end >= timeout:
        raise Stalled(f"{command[0]}: no {ready_marker.decode()} within {timeout} s (first line "
                      f"{'after %.1f s' % first_line if first_line else 'never'})",
                      first_line * 1e3 if first_line else None)
    # A quiet boot prints no "Linux version" line: its first-line figure is left empty.
    if ready is None or (process.returncode != 0 and on_ready is not None):
        tail = output[-600:].decode(errors="replace")
        raise RuntimeError(f"{command[0]}: status {process.returncode}, first line {first_line}, ready {ready}:\n{tail}")
    return {"first_line_ms": first_line * 1e3 if first_line else float("nan"), "ready_ms": ready * 1e3,
            "total_ms": end * 1e3}


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
    parser.add_argument("--boot-timeout", type=float, default=120,
                        help="seconds a boot may take before it counts as stalled (and is killed)")
    arguments = parser.parse_args()
    samples = {name: [] for name in commands(arguments)}
    stalls = {name: 0 for name in samples}
    failures = {name: 0 for name in samples}
    # Interleaved, so drift in the host hits every VMM alike; a stalled or failed boot is
    # counted and the run goes on, so the other boots' results are kept.
    for run in range(arguments.runs):
        for name, command in commands(arguments).items():
            try:
                samples[name].append(boot_once(command, timeout=arguments.boot_timeout))
                print(f"  {name} boot {run + 1}: ready after {samples[name][-1]['ready_ms']:.0f} ms",
                      file=sys.stderr, flush=True)
            except Stalled as error:
                stalls[name] += 1
                print(f"  {name} boot {run + 1}: STALLED: {error}", file=sys.stderr, flush=True)
            except RuntimeError as error:
                failures[name] += 1
                print(f"  {name} boot {run + 1}: FAILED: {error}", file=sys.stderr, flush=True)
    results = {}
    for name, runs in samples.items():
        if runs:
            results[name] = {key: statistics.median(s[key] for s in runs) for key in runs[0]}
            try:
                results[name]["rss_mib"] = peak_rss_mib(commands(arguments)[name], timeout=arguments.boot_timeout)
            except RuntimeError:
                results[name]["rss_mib"] = float("nan")
    print(f"\nLinux boot, medians of the boots that finished, of {arguments.runs} each "
          f"(kernel command line: {COMMAND_LINE!r}; the -quiet rows add 'quiet')\n")
    print(f"{'':<20}{'first line':>12}{'ready':>12}{'to exit':>12}{'peak RSS':>12}{'stalled':>9}{'failed':>8}")
    for name in samples:
        r = results.get(name)
        figures = (f"{r['first_line_ms']:>9.0f} ms{r['ready_ms']:>9.0f} ms{r['total_ms']:>9.0f} ms"
                   f"{r['rss_mib']:>8.1f} MiB") if r else f"{'no boot finished':>48}"
        print(f"{name:<20}{figures}{stalls[name]:>9}{failures[name]:>8}")
    print()
    for ours, peers in (("skvm", ("qemu-microvm", "qemu-q35")), ("skvm-quiet", ("qemu-microvm-quiet",))):
        mine = results.get(ours)
        for name in peers:
            r = results.get(name)
            if mine and r:
                print(f"{ours} / {name}: first line {mine['first_line_ms'] / r['first_line_ms']:.2f}×, "
                      f"ready {mine['ready_ms'] / r['ready_ms']:.2f}×, RSS {mine['rss_mib'] / r['rss_mib']:.2f}×")
        report(f"Linux boot to shell{' (quiet)' if ours.endswith('quiet') else ''}", "ms",
               mine["ready_ms"] if mine else None, {name: results[name]["ready_ms"] for name in peers if name in results},
               ratio_goal=1.0)
    report("stalled Linux boots", f"of {arguments.runs}", stalls["skvm"] + stalls["skvm-quiet"],
           {name: count for name, count in stalls.items() if not name.startswith("skvm")}, value_goal=0,
           note="per VMM: " + ", ".join(f"{name} {count}" for name, count in stalls.items()))


if __name__ == "__main__":
    main()
