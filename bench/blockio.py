#!/usr/bin/env python3
"""Runs the virtio-blk benchmark guest under each VMM, timestamps its BEGIN/END lines as
they arrive, and prints per phase the median MiB/s and IOPS and the ratio to the first VMM.

  bench/blockio.py [--runs K] [--frames] NAME=COMMAND...   (COMMAND is split on spaces)

With --frames the phases are the virtio-net probe's: the goal is frames per second (≥ 1.2×
the best peer), the requests column counts frames.
"""
import statistics
import subprocess
import sys
import threading
import time

from results import report


def run_once(command):
    """Returns {phase: (seconds, requests, bytes)} for one run, or raises."""
    process = subprocess.Popen(command.split(), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    watchdog = threading.Timer(600, process.kill)  # a guest that hangs must not hang the bench
    watchdog.start()
    begun, phases = {}, {}
    for raw in process.stdout:
        now = time.monotonic()
        words = raw.decode(errors="replace").split()
        if len(words) >= 2 and words[0] == "BEGIN":
            begun[words[1]] = now
        elif len(words) == 4 and words[0] == "END" and words[1] in begun:
            phases[words[1]] = (now - begun[words[1]], int(words[2]), int(words[3]))
        elif words[:2] == ["bench:", "done"]:
            break
    watchdog.cancel()
    process.kill()
    process.wait()
    if not phases:
        raise RuntimeError(f"no phases measured from: {command}")
    return phases


def main():
    arguments = sys.argv[1:]
    runs = 3
    if arguments[:1] == ["--runs"]:
        runs, arguments = int(arguments[1]), arguments[2:]
    frames = arguments[:1] == ["--frames"]
    if frames:
        arguments = arguments[1:]
    vmms = [argument.split("=", 1) for argument in arguments]
    results = {name: [] for name, _ in vmms}
    for run in range(runs):
        for name, command in vmms:  # interleaved, so drift in the host hits every VMM alike
            try:
                results[name].append(run_once(command))
            except RuntimeError as error:
                print(f"  {name} run {run + 1}: {error}", file=sys.stderr)
    first = vmms[0][0]
    phases = sorted({phase for runs_ in results.values() for run in runs_ for phase in run})
    print(f"{'phase':<14} {'vmm':<14} {'MiB/s':>10} {'IOPS':>10} {'ratio':>7}  (median of {runs}; ratio > 1: {first} faster)")
    medians = {}
    for phase in phases:
        for name, _ in vmms:
            samples = [run[phase] for run in results[name] if phase in run]
            if not samples:
                continue
            seconds = statistics.median(s for s, _, _ in samples)
            requests, size = samples[0][1], samples[0][2]
            medians[(phase, name)] = seconds
            ratio = seconds / medians[(phase, first)] if (phase, first) in medians else 1.0
            print(f"{phase:<14} {name:<14} {size / seconds / 2**20:>10.1f} {requests / seconds:>10.0f} {ratio:>7.2f}")
        if frames:
            rate = {name: requests / medians[(phase, name)] for name, _ in vmms if (phase, name) in medians}
            if first in rate:
                report(f"virtio-net probe: {phase}", "frames/s", rate.pop(first), rate, better="higher", ratio_goal=1.2)
            continue
        throughput = {name: size / medians[(phase, name)] / 2**20 for name, _ in vmms if (phase, name) in medians}
        if first in throughput:
            report(f"virtio-blk probe: {phase}", "MiB/s", throughput.pop(first), throughput, better="higher",
                   ratio_goal=1.0)


if __name__ == "__main__":
    main()
