#!/usr/bin/env python3
"""Disk-image bench: skvm img against qemu-img on the same files in one run.

  bench/images.py --skvm SKVM [--size-mib 1024] [--runs 3] [--requests 50000]

Prints medians (seconds, requests/s) and ratios qemu-img/skvm for convert time (above 1:
skvm is faster) and skvm/qemu-img for requests per second (above 1: skvm is faster).
"""
import argparse
import os
import re
import statistics
import subprocess
import tempfile
import time

from results import report


def timed(command):
    # Each tool starts with no dirty pages left over from the other's run: writeback of the
    # previous output (even a deleted one) would otherwise be charged to whoever runs next.
    os.sync()
    start = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def rate(command):
    output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    seconds = float(re.search(r"Run completed in ([0-9.]+) seconds", output).group(1))
    return seconds


def mixed_raw(path, size_mib):
    """1 MiB stretches: incompressible, compressible text, zeros (sparse), in turn."""
    with open(path, "wb") as f:
        f.truncate(size_mib << 20)
        for mib in range(size_mib):
            kind = mib % 3
            if kind == 2:
                continue
            f.seek(mib << 20)
            f.write(os.urandom(1 << 20) if kind == 0 else (b"SwiftKVM qcow2 bench %08d\n" % mib) * 37449 + b"\n" * 22)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--skvm", required=True)
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--requests", type=int, default=50000)
    args = parser.parse_args()
    skvm = args.skvm
    rows = []
    with tempfile.TemporaryDirectory(prefix="skvm-img-bench-", dir="/var/tmp") as d:
        raw = os.path.join(d, "source.raw")
        mixed_raw(raw, args.size_mib)
        qcow2 = os.path.join(d, "source.qcow2")
        subprocess.run(["qemu-img", "convert", "-O", "qcow2", raw, qcow2], check=True)
        jobs = {
            "convert qcow2->raw": lambda tool, out: [tool, "img", "convert", "-O", "raw", qcow2, out]
            if tool == skvm else ["qemu-img", "convert", "-O", "raw", qcow2, out],
            "convert raw->qcow2": lambda tool, out: [tool, "img", "convert", "-O", "qcow2", raw, out]
            if tool == skvm else ["qemu-img", "convert", "-O", "qcow2", raw, out],
        }
        for name, make in jobs.items():
            ours, theirs = [], []
            for run in range(args.runs):
                out = os.path.join(d, "out")
                for tool in (("qemu-img", skvm) if run % 2 == 0 else (skvm, "qemu-img")):  # alternate who goes first
                    (ours if tool == skvm else theirs).append(timed(make(tool, out)))
                    if tool == skvm:
                        subprocess.run(["qemu-img", "compare", raw, out], check=True, stdout=subprocess.DEVNULL)
                    os.remove(out)
            rows.append((name, "s", statistics.median(ours), statistics.median(theirs),
                         statistics.median(theirs) / statistics.median(ours)))
        n = args.requests
        for name, write in [("4 KiB sequential writes", True), ("4 KiB sequential reads", False)]:
            ours, theirs = [], []
            for _ in range(args.runs):
                for tool, results in (("qemu-img", theirs), (skvm, ours)):
                    image = os.path.join(d, "bench.qcow2")
                    if write or not os.path.exists(image):
                        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", image, "1G"], check=True)
                        if not write:
                            subprocess.run(["qemu-img", "bench", "-w", "-c", str(n), "-s", "4K", "-q", image], check=True)
                    flags = ["-c", str(n), "-s", "4K"] + (["-w"] if write else [])
                    command = ([skvm, "img", "bench"] if tool == skvm else ["qemu-img", "bench", "-t", "writeback"]) + flags + [image]
                    results.append(n / rate(command))
                    if write:
                        os.remove(image)
            rows.append((name, "req/s", statistics.median(ours), statistics.median(theirs),
                         statistics.median(ours) / statistics.median(theirs)))
        ours = []
        image = os.path.join(d, "random.qcow2")
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", image, "1G"], check=True)
        for write in (True, False):
            seconds = rate([skvm, "img", "bench", "--random", "-c", str(n), "-s", "4K"] + (["-w"] if write else []) + [image])
            rows.append((f"4 KiB random {'writes' if write else 'reads'} (skvm only; qemu-img bench is sequential)",
                         "req/s", n / seconds, float("nan"), float("nan")))
    print(f"{'measure':62} {'unit':6} {'skvm':>12} {'qemu-img':>12} {'ratio':>7}")
    for name, unit, ours, theirs, ratio in rows:
        print(f"{name:62} {unit:6} {ours:12.3f} {theirs:12.3f} {ratio:7.2f}")
        if theirs == theirs:  # not NaN: qemu-img measured it too
            report(f"img: {name}", unit, ours, {"qemu-img": theirs}, better="higher" if unit == "req/s" else "lower",
                   ratio_goal=1.0)
    print("ratio above 1: skvm is faster")


if __name__ == "__main__":
    main()
