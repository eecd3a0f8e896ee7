#!/usr/bin/env python3
"""Monitor latency: QMP `query-status` round trips (median, p99) and the time for `stop`
to return with 1 and 4 busy vCPUs, skvm against QEMU on the same guest bytes.

  bench/qmp.py --skvm SKVM --qemu QEMU --guest busy.bin --bios busy-bios.bin [--queries N] [--stops N]
"""
import argparse
import json
import os
import select
import socket
import statistics
import subprocess
import tempfile
import time

from results import report


def percentile(values, fraction):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


class Session:
    def __init__(self, command, path):
        self.process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                        stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        seen = b""
        while b"R" not in seen:
            if time.monotonic() > deadline or self.process.poll() is not None:
                raise SystemExit(f"qmp bench: {command[0]} did not start the guest")
            if select.select([self.process.stdout], [], [], 0.1)[0]:
                seen += os.read(self.process.stdout.fileno(), 4096)
        while not os.path.exists(path):
            time.sleep(0.01)
        self.socket = socket.socket(socket.AF_UNIX)
        self.socket.connect(path)
        self.file = self.socket.makefile("rb")
        self.file.readline()
        self.command("qmp_capabilities")

    def command(self, name):
        self.socket.sendall(json.dumps({"execute": name}).encode() + b"\n")
        while True:
            reply = json.loads(self.file.readline())
            if "event" not in reply:
                return reply

    def close(self):
        try:
            self.command("quit")
        except (OSError, ValueError):
            pass
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()


def measure(command, path, queries, stops):
    session = Session(command, path)
    try:
        latencies = []
        for _ in range(queries):
            start = time.perf_counter()
            session.command("query-status")
            latencies.append((time.perf_counter() - start) * 1e6)
        stop_times = []
        for _ in range(stops):
            time.sleep(0.02)
            start = time.perf_counter()
            session.command("stop")
            stop_times.append((time.perf_counter() - start) * 1e6)
            session.command("cont")
        return latencies, stop_times
    finally:
        session.close()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--skvm", required=True)
    parser.add_argument("--qemu", required=True)
    parser.add_argument("--guest", required=True)
    parser.add_argument("--bios", required=True)
    parser.add_argument("--queries", type=int, default=2000)
    parser.add_argument("--stops", type=int, default=30)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="skvm-qmp-bench-") as directory:
        for cpus in (1, 4):
            for name in ("skvm", "qemu-q35"):
                path = os.path.join(directory, f"{name}-{cpus}.sock")
                if name == "skvm":
                    command = [args.skvm, "run", "--flat", args.guest, "--memory", "16M", "--cpus", str(cpus),
                               "--qmp", f"unix:{path}"]
                else:
                    command = [args.qemu, "-M", "q35", "-enable-kvm", "-cpu", "host,-arch-capabilities", "-m", "16",
                               "-smp", str(cpus), "-nodefaults", "-display", "none", "-serial", "stdio",
                               "-qmp", f"unix:{path},server=on,wait=off", "-bios", args.bios]
                latencies, stop_times = measure(command, path, args.queries if cpus == 1 else args.queries // 4,
                                                args.stops)
                rows.append((name, cpus, statistics.median(latencies), percentile(latencies, 0.99),
                             statistics.median(stop_times), percentile(stop_times, 0.99)))
    print(f"{'vmm':10} {'vCPUs':>5} {'query-status µs (median / p99)':>32} {'stop µs (median / p99)':>26}")
    for name, cpus, median, p99, stop_median, stop_p99 in rows:
        print(f"{name:10} {cpus:>5} {median:>20.1f} / {p99:>9.1f} {stop_median:>14.1f} / {stop_p99:>9.1f}")
    for cpus in (1, 4):
        ours = next(row for row in rows if row[0] == "skvm" and row[1] == cpus)
        theirs = next(row for row in rows if row[0] == "qemu-q35" and row[1] == cpus)
        print(f"ratio qemu/skvm, {cpus} vCPU(s): query-status {theirs[2] / ours[2]:.2f}x, "
              f"stop {theirs[4] / ours[4]:.2f}x (above 1: skvm is faster)")
        report(f"QMP stop, {cpus} busy vCPU(s)", "µs", ours[4], {"qemu-q35": theirs[4]}, ratio_goal=0.5)
        report(f"QMP query-status, {cpus} vCPU(s)", "µs", ours[2], {"qemu-q35": theirs[2]})


if __name__ == "__main__":
    main()
