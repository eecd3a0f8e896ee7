#!/usr/bin/env python3
"""Times saving and restoring the snapshot bench guest (256 MiB of RAM, 64 MiB of it written)
under skvm and QEMU, in one run, interleaved: medians and ratios.

  bench/snapshot.py --runs K --skvm SKVM --qemu QEMU --probe PROBE --bios BIOS --entry LONGMODE --out DIR

Save: skvm QMP migrate to file: and HMP savevm; QEMU migrate to exec:cat and HMP savevm, each
from the command to completion. Restore: from exec to the guest's first byte after it runs
again (the guest prints without pause), for skvm --incoming file: (mapped and copy) and
--loadvm, QEMU -incoming exec:cat and -loadvm; and, for skvm, to QMP status "running".
"""
import argparse
import asyncio
import os
import select
import statistics
import subprocess
import sys
import time

from qemu.qmp import QMPClient

from results import report


async def qmp(socket_path, *commands):
    """Runs commands on a QMP socket; returns (replies, seconds each took to complete)."""
    client = QMPClient("bench")
    for _ in range(500):
        try:
            await client.connect(socket_path)
            break
        except Exception:
            await asyncio.sleep(0.01)
    replies, times = [], []
    for command in commands:
        started = time.monotonic()
        if command[0] == "migrate":
            await client.execute("migrate", {"uri": command[1]})
            while True:
                info = await client.execute("query-migrate")
                if info.get("status") in ("completed", "failed"):
                    break
                await asyncio.sleep(0.001)
            replies.append(info)
        elif command[0] == "hmp":
            replies.append(await client.execute("human-monitor-command", {"command-line": command[1]}))
        else:
            replies.append(await client.execute(command[0]))
        times.append(time.monotonic() - started)
    try:
        await client.execute("quit")
        await client.disconnect()
    except Exception:
        pass
    return replies, times


def start(command, wait_for=b"ready"):
    """Starts a VMM; returns (process, seconds from exec to `wait_for` on its console)."""
    started = time.monotonic()
    # SKVM_TRACE_MIGRATION=1 (or any SKVM_TRACE_*) shows the VMMs' traces on standard error.
    traced = any(name.startswith("SKVM_TRACE_") for name in os.environ)
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=None if traced else subprocess.DEVNULL)
    seen = b""
    while wait_for not in seen:
        ready, _, _ = select.select([process.stdout], [], [], 30)
        if not ready:
            process.kill()
            raise RuntimeError(f"no {wait_for!r} from {command[:3]}")
        chunk = os.read(process.stdout.fileno(), 4096)
        if not chunk:
            raise RuntimeError(f"{command[:3]} ended: {seen[-200:]}")
        seen += chunk
    return process, time.monotonic() - started


def drain(process):
    process.stdout.close()
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def main():
    parser = argparse.ArgumentParser()
    for option in ("skvm", "qemu", "probe", "bios", "entry", "out"):
        parser.add_argument(f"--{option}", required=True)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    out = args.out
    sock = os.path.join(out, "qmp.sock")
    qcow2 = os.path.join(out, "disk.qcow2")
    snap = os.path.join(out, "machine.snap")
    qemu_state = os.path.join(out, "qemu.state")
    skvm_base = [args.skvm, "run", "--flat", args.probe, "--flat-entry", "long", "--memory", "256M"]
    qemu_base = [args.qemu, "-M", "q35", "-enable-kvm", "-cpu", "host,-arch-capabilities", "-m", "256",
                 "-nodefaults", "-display", "none", "-serial", "stdio", "-no-reboot", "-bios", args.bios,
                 "-device", f"loader,file={args.entry},addr=0x8000,force-raw=on",
                 "-device", f"loader,file={args.probe},addr=0x10000,force-raw=on",
                 "-drive", f"file={qcow2},format=qcow2,if=none,id=d0", "-device", "virtio-blk-pci,drive=d0",
                 "-qmp", f"unix:{sock},server=on,wait=off"]
    skvm_disk = ["--disk", qcow2]
    samples = {}

    def add(name, value):
        samples.setdefault(name, []).append(value * 1000)

    for run in range(args.runs):
        for path in (sock, snap, qemu_state):
            if os.path.exists(path):
                os.unlink(path)
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", qcow2, "64M"], check=True)
        # skvm: save to a file, then restore it mapped and copied; savevm, then --loadvm.
        process, _ = start(skvm_base + skvm_disk + ["--qmp", f"unix:{sock}"])
        replies, times = asyncio.run(qmp(sock, ("migrate", f"file:{snap}")))
        drain(process)
        add("save: skvm migrate file:", times[0])
        for mode in ("mapped", "copy"):
            process, seconds = start([args.skvm, "run", "--incoming", f"file:{snap},mode={mode}",
                                      "--qmp", f"unix:{sock}"], wait_for=b".")
            add(f"restore: skvm --incoming file: ({mode})", seconds)
            asyncio.run(qmp(sock))
            drain(process)
        process, _ = start(skvm_base + skvm_disk + ["--qmp", f"unix:{sock}"])
        replies, times = asyncio.run(qmp(sock, ("hmp", "savevm bench")))
        drain(process)
        add("save: skvm savevm", times[0])
        process, seconds = start(skvm_base + skvm_disk + ["--loadvm", "bench", "--qmp", f"unix:{sock}"], wait_for=b".")
        add("restore: skvm --loadvm", seconds)
        asyncio.run(qmp(sock))
        drain(process)
        # QEMU: migrate to exec:cat and -incoming; savevm and -loadvm.
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", qcow2, "64M"], check=True)
        process, _ = start(qemu_base)
        replies, times = asyncio.run(qmp(sock, ("migrate", f"exec:cat > {qemu_state}")))
        drain(process)
        add("save: qemu migrate exec:", times[0])
        process, seconds = start(qemu_base + ["-incoming", f"exec:cat {qemu_state}"], wait_for=b".")
        add("restore: qemu -incoming exec:", seconds)
        asyncio.run(qmp(sock))
        drain(process)
        process, _ = start(qemu_base)
        replies, times = asyncio.run(qmp(sock, ("hmp", "savevm bench")))
        drain(process)
        add("save: qemu savevm", times[0])
        process, seconds = start(qemu_base + ["-loadvm", "bench"], wait_for=b".")
        add("restore: qemu -loadvm", seconds)
        asyncio.run(qmp(sock))
        drain(process)
        print(f"  run {run + 1} of {args.runs} done", file=sys.stderr, flush=True)

    median = {name: statistics.median(values) for name, values in samples.items()}
    print(f"{'measure':<42} {'median ms':>10}   (runs: {args.runs}; exec to first byte after restore)")
    for name in sorted(median):
        print(f"{name:<42} {median[name]:>10.1f}")
    print()
    pairs = [
        ("save: skvm migrate file:", "save: qemu migrate exec:", 0.5),
        ("save: skvm savevm", "save: qemu savevm", 0.5),
        ("restore: skvm --incoming file: (mapped)", "restore: qemu -loadvm", 0.2),
        ("restore: skvm --loadvm", "restore: qemu -loadvm", 0.2),
        ("restore: skvm --incoming file: (mapped)", "restore: qemu -incoming exec:", 0.2),
    ]
    print(f"{'skvm':<42} {'vs':<34} {'ratio':>7} {'goal':>6}")
    for ours, theirs, goal in pairs:
        ratio = median[ours] / median[theirs]
        print(f"{ours:<42} {theirs:<34} {ratio:>6.2f}x {'≤' + str(goal):>6} {'met' if ratio <= goal else 'NOT met'}")
        report(ours, "ms", median[ours], {theirs.split(": ", 1)[1]: median[theirs]}, ratio_goal=goal,
               value_goal=5 if ours == "restore: skvm --incoming file: (mapped)" and "loadvm" in theirs else None)


if __name__ == "__main__":
    main()
