#!/usr/bin/env python3
"""Live migration of the snapshot bench guest (256 MiB of RAM, 64 MiB of it written; it
prints without pause) between two processes on this host, skvm→skvm and QEMU→QEMU, in one
run, interleaved: total time, downtime and bytes sent as each source's query-migrate reports
them; medians and ratios.

  bench/migrate.py --runs K --skvm SKVM --qemu QEMU --probe PROBE --bios BIOS --entry LONGMODE --out DIR

Both get the same parameters: downtime-limit 300 ms (both defaults) and no bandwidth cap
(QEMU's default is 128 MiB/s: lifted, its best configuration for this job).
"""
import argparse
import asyncio
import os
import socket
import statistics
import subprocess
import time

from qemu.qmp import QMPClient

from results import report
from snapshot import drain, start


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


async def connect(socket_path):
    """A QMP client on `socket_path`, retrying while the VMM starts."""
    client = QMPClient("bench")
    for _ in range(500):
        try:
            await client.connect(socket_path)
            break
        except Exception:
            await asyncio.sleep(0.01)
    return client


async def migrate(socket_path, uri):
    client = await connect(socket_path)
    await client.execute("migrate-set-parameters", {"max-bandwidth": 100 << 30, "downtime-limit": 300})
    started = time.monotonic()
    await client.execute("migrate", {"uri": uri})
    while True:
        info = await client.execute("query-migrate")
        if info.get("status") in ("completed", "failed", "cancelled"):
            break
        await asyncio.sleep(0.001)
    wall = time.monotonic() - started
    try:
        await client.execute("quit")
        await client.disconnect()
    except Exception:
        pass
    return info, wall


def main():
    parser = argparse.ArgumentParser()
    for option in ("skvm", "qemu", "probe", "bios", "entry", "out"):
        parser.add_argument(f"--{option}", required=True)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    out = args.out
    source_socket = os.path.join(out, "source.sock")
    destination_socket = os.path.join(out, "destination.sock")
    qcow2 = os.path.join(out, "disk.qcow2")
    skvm_base = [args.skvm, "run", "--flat", args.probe, "--flat-entry", "long", "--memory", "256M", "--disk", qcow2]
    qemu_base = [args.qemu, "-M", "q35", "-enable-kvm", "-cpu", "host,-arch-capabilities", "-m", "256",
                 "-nodefaults", "-display", "none", "-serial", "stdio", "-no-reboot", "-bios", args.bios,
                 "-device", f"loader,file={args.entry},addr=0x8000,force-raw=on",
                 "-device", f"loader,file={args.probe},addr=0x10000,force-raw=on",
                 "-drive", f"file={qcow2},format=qcow2,if=none,id=d0", "-device", "virtio-blk-pci,drive=d0"]
    samples = {}

    def add(name, value):
        samples.setdefault(name, []).append(value)

    for run in range(args.runs):
        for vmm in ("skvm", "qemu"):
            for path in (source_socket, destination_socket):
                if os.path.exists(path):
                    os.unlink(path)
            subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", qcow2, "64M"], check=True)
            port = free_port()
            if vmm == "skvm":
                source, _ = start(skvm_base + ["--qmp", f"unix:{source_socket}"])
                destination = subprocess.Popen(
                    [args.skvm, "run", "--incoming", f"tcp::{port}", "--qmp", f"unix:{destination_socket}"],
                    stdout=subprocess.PIPE, stderr=subprocess.PIPE)
                # It prints when it listens.
                destination.stderr.readline()
            else:
                source, _ = start(qemu_base + ["-qmp", f"unix:{source_socket},server=on,wait=off"])
                destination = subprocess.Popen(
                    qemu_base + ["-incoming", f"tcp:127.0.0.1:{port}",
                                 "-qmp", f"unix:{destination_socket},server=on,wait=off"],
                    stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
                time.sleep(0.5)  # QEMU listens once it has built the machine
            time.sleep(0.3)  # the guest runs a while first
            info, wall = asyncio.run(migrate(source_socket, f"tcp:127.0.0.1:{port}"))
            drain(source)
            if info.get("status") != "completed":
                print(f"  {vmm} run {run + 1}: {info}", flush=True)
            else:
                add(f"{vmm} total ms", info["total-time"])
                add(f"{vmm} downtime ms", info["downtime"])
                add(f"{vmm} MiB sent", info["ram"]["transferred"] / 2**20)
                print(f"  {vmm} run {run + 1}: total {info['total-time']} ms, downtime {info['downtime']} ms, "
                      f"{info['ram']['transferred'] / 2**20:.1f} MiB", flush=True)
            # The destination runs the guest on: it prints.
            try:
                asyncio.run(quit_destination(destination_socket))
            finally:
                drain(destination)
    median = {name: statistics.median(values) for name, values in samples.items()}
    print(f"\nlive migration of a 256 MiB probe guest (64 MiB written) over loopback, medians of {args.runs}\n")
    print(f"{'':<10}{'total ms':>10}{'downtime ms':>13}{'MiB sent':>10}")
    for vmm in ("skvm", "qemu"):
        cells = [median.get(f"{vmm} {key}") for key in ("total ms", "downtime ms", "MiB sent")]
        print(f"{vmm:<10}" + "".join(f"{'—' if v is None else f'{v:.1f}':>{w}}" for v, w in zip(cells, (10, 13, 10))))
    if "skvm downtime ms" in median and "qemu downtime ms" in median:
        report("migrate: downtime (idle guest)", "ms", median["skvm downtime ms"],
               {"qemu": median["qemu downtime ms"]}, ratio_goal=0.5, value_goal=50)
        report("migrate: total time (idle guest)", "ms", median["skvm total ms"],
               {"qemu": median["qemu total ms"]}, ratio_goal=1.0)


async def quit_destination(socket_path):
    client = await connect(socket_path)
    try:
        await client.execute("quit")
        await client.disconnect()
    except Exception:
        pass


if __name__ == "__main__":
    main()
