#!/usr/bin/env python3
"""How many VMs fit: starts N copies of each VMM on the same idle guest (it prints 'R' on
COM1 and halts), waits until every copy has printed, and reads each process's PSS
(proportional set size: its private memory plus its share of what the copies share, from
/proc/PID/smaps_rollup) and RSS. Prints the mean per VM and, for skvm, a BENCH-RESULT line.

    density.py --count N NAME=COMMAND...   (COMMAND is split on spaces)
"""
import argparse
import os
import select
import statistics
import subprocess
import time

from results import report


def rollup(pid):
    values = {}
    for line in open(f"/proc/{pid}/smaps_rollup"):
        parts = line.split()
        if len(parts) >= 2 and parts[0].endswith(":") and parts[1].isdigit():
            values[parts[0][:-1]] = int(parts[1])  # kB
    return values


def measure(command, count, timeout=60):
    processes = [subprocess.Popen(command.split(), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                  stderr=subprocess.DEVNULL) for _ in range(count)]
    try:
        deadline = time.monotonic() + timeout
        waiting = {p.stdout.fileno(): p for p in processes}
        seen = {fd: b"" for fd in waiting}
        while waiting and time.monotonic() < deadline:
            ready, _, _ = select.select(list(waiting), [], [], 0.5)
            for fd in ready:
                seen[fd] += os.read(fd, 4096)
                if b"R" in seen[fd]:
                    del waiting[fd]
        if waiting:
            raise RuntimeError(f"{len(waiting)} of {count} copies never printed 'R': {command}")
        time.sleep(0.5)  # let start-up settle
        rollups = [rollup(p.pid) for p in processes]
        return (statistics.mean(r["Pss"] for r in rollups) / 1024, statistics.mean(r["Rss"] for r in rollups) / 1024)
    finally:
        for p in processes:
            p.kill()
        for p in processes:
            p.wait()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--count", type=int, default=10)
    parser.add_argument("vmms", nargs="+", help="NAME=COMMAND")
    arguments = parser.parse_args()
    results = {}
    for spec in arguments.vmms:
        name, command = spec.split("=", 1)
        results[name] = measure(command, arguments.count)
    print(f"\n{arguments.count} copies of each VMM running the same idle guest at once; mean per VM\n")
    print(f"{'vmm':<14}{'PSS':>12}{'RSS':>12}")
    for name, (pss, rss) in results.items():
        print(f"{name:<14}{pss:>8.2f} MiB{rss:>8.2f} MiB")
    if "skvm" in results:
        report(f"unique memory per VM (PSS, {arguments.count} running)", "MiB", results["skvm"][0],
               {name: r[0] for name, r in results.items() if name != "skvm" and not name.startswith("floor")},
               value_goal=2)


if __name__ == "__main__":
    main()
