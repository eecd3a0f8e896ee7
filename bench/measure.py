#!/usr/bin/env python3
"""Runs VMM command lines on the benchmark guest and prints medians and ratios.

Each run is timed from spawn: to the first byte on stdout (the guest's 'S'
marker, written to COM1 before its loop), between the 'S' and 'E' markers
(ITERATIONS port exits), and to process exit. Peak RSS is measured in separate
runs under /usr/bin/time: wait4's ru_maxrss of a child of this Python process
would include Python's own memory from before the child's exec.
Usage: measure.py --iterations N --runs K NAME=COMMAND... (COMMAND is one shell word list)
"""
import argparse
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time

from results import report


def run_once(command):
    start = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
    first = marker_s = marker_e = None
    output = b""
    while True:
        chunk = os.read(process.stdout.fileno(), 4096)
        now = time.perf_counter()
        if not chunk:
            break
        if first is None:
            first = now
        if marker_s is None and b"S" in chunk:
            marker_s = now
        if marker_e is None and b"E" in chunk:
            marker_e = now
        output += chunk
    _, status, _ = os.wait4(process.pid, 0)
    end = time.perf_counter()
    errors = process.stderr.read().decode(errors="replace")
    code = os.waitstatus_to_exitcode(status)
    if code != 0 or marker_s is None or marker_e is None:
        raise RuntimeError(f"{shlex.join(command)}: status {code}, output {output!r}, errors {errors.strip()!r}")
    return {
        "start_to_marker_ms": (first - start) * 1e3,
        "loop_s": marker_e - marker_s,
        "wall_ms": (end - start) * 1e3,
    }


def peak_rss_mib(command):
    with tempfile.NamedTemporaryFile("r") as report:
        subprocess.run(
            ["/usr/bin/time", "-f", "%M", "-o", report.name] + command,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL, check=True,
        )
        return int(report.read().split()[-1]) / 1024


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--iterations", type=int, required=True)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("vmms", nargs="+", help="NAME=COMMAND")
    arguments = parser.parse_args()

    vmms = [spec.split("=", 1) for spec in arguments.vmms]
    samples = {name: [] for name, _ in vmms}
    # Interleaved rounds (each VMM once per round), so drift in a noisy host hits every VMM
    # alike instead of whichever ran during it.
    for _ in range(arguments.runs):
        for name, command in vmms:
            samples[name].append(run_once(shlex.split(command)))
    results = {}
    for name, command in vmms:
        results[name] = {key: statistics.median(sample[key] for sample in samples[name]) for key in samples[name][0]}
        results[name]["rss_mib"] = statistics.median(peak_rss_mib(shlex.split(command)) for _ in range(3))
        results[name]["exit_us"] = results[name]["loop_s"] / arguments.iterations * 1e6
        print(f"  measured {name}: {arguments.runs} runs", file=sys.stderr)

    names = list(results)
    # Overhead is measured against the floor with the same in-kernel devices, when there is one.
    floor = results.get("floor+irqchip", results[names[0]])
    print(f"\nmedians of {arguments.runs} runs, {arguments.iterations} port exits per run\n")
    header = f"{'':<14}{'start→marker':>14}{'process wall':>14}{'peak RSS':>11}{'PIO exit':>11}{'over floor+irqchip':>20}"
    print(header)
    for name in names:
        r = results[name]
        over = r["exit_us"] - floor["exit_us"]
        print(
            f"{name:<14}{r['start_to_marker_ms']:>11.2f} ms{r['wall_ms']:>11.1f} ms{r['rss_mib']:>7.1f} MiB"
            f"{r['exit_us']:>8.3f} µs{over:>+17.3f} µs"
        )
    if "skvm" in results:
        skvm = results["skvm"]
        peers = {name: r for name, r in results.items() if name != "skvm" and not name.startswith("floor")}
        report("start → first guest byte", "ms", skvm["start_to_marker_ms"],
               {name: r["start_to_marker_ms"] for name, r in peers.items()}, value_goal=5)
        report("peak RSS, tiny guest", "MiB", skvm["rss_mib"], {name: r["rss_mib"] for name, r in peers.items()},
               value_goal=8)
        report("PIO exit over the floor (in-kernel irqchip)", "µs", skvm["exit_us"] - floor["exit_us"],
               {name: r["exit_us"] - floor["exit_us"] for name, r in peers.items()}, value_goal=0.10)
        print()
        for name in names:
            if name == "skvm":
                continue
            r = results[name]
            print(
                f"skvm / {name}: start→marker {skvm['start_to_marker_ms'] / r['start_to_marker_ms']:.2f}×, "
                f"wall {skvm['wall_ms'] / r['wall_ms']:.2f}×, RSS {skvm['rss_mib'] / r['rss_mib']:.2f}×, "
                f"per exit {skvm['exit_us'] / r['exit_us']:.3f}×"
            )


if __name__ == "__main__":
    main()
