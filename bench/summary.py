#!/usr/bin/env python3
"""Prints one table from the BENCH-RESULT lines in the given files (bench/run-all's logs):
measure, skvm, the best peer (named), the ratio, the goal, and whether it is met."""
import json
import sys


def number(value):
    if value is None:
        return "—"
    return f"{value:.3g}" if abs(value) < 100 else f"{value:.0f}"


def main():
    rows, missing = [], []
    for path in sys.argv[1:]:
        found = False
        for line in open(path, errors="replace"):
            at = line.find("BENCH-RESULT ")
            if at >= 0:
                rows.append(json.loads(line[at + len("BENCH-RESULT "):]))
                found = True
        if not found:
            missing.append(path)
    header = f"{'measure':<52} {'skvm':>10} {'best peer':>26} {'ratio':>7}  {'goal':<18} {'':<7}"
    print(header)
    print("-" * len(header))
    for row in rows:
        peer = f"{row['peer']} {number(row['peer_value'])}" if row["peer"] else "—"
        ratio = f"{row['ratio']:.2f}×" if row["ratio"] is not None else "—"
        met = {True: "met", False: "NOT met", None: ""}[row["met"]]
        print(f"{row['measure'] + ' (' + row['unit'] + ')':<52} {number(row['skvm']):>10} {peer:>26} {ratio:>7}  "
              f"{row['goal']:<18} {met:<7}" + (f"  {row['note']}" if row["note"] else ""))
    goals = [row for row in rows if row["met"] is not None]
    print(f"\n{sum(row['met'] for row in goals)} of {len(goals)} goals met")
    for path in missing:
        print(f"no results from {path} (the bench failed: see its log)")


if __name__ == "__main__":
    main()
