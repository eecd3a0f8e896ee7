#!/usr/bin/env python3
"""Live migration of a probe guest (256 MiB of RAM, 64 MiB of it written; it prints a dot
every few microseconds) between two processes on this host, skvm→skvm and QEMU→QEMU, in one
run, interleaved, with two guests: idle (snapshot_bench: writes nothing after start) and
dirtying (migrate_bench: rewrites one page every 2^18 TSC ticks). For each: total time and
downtime as each source's query-migrate reports them, the guest-visible pause (from the
source's last console byte to the destination's first — what the guest and its users see,
whichever side does the work), and bytes sent; medians and ratios.

  bench/migrate.py --runs K --skvm SKVM --qemu QEMU --probe IDLE --dirty-probe DIRTYING --bios BIOS \
    --entry LONGMODE --out DIR

Both get the same parameters: downtime-limit 300 ms (both defaults) and no bandwidth cap
(QEMU's default is 128 MiB/s: lifted, its best configuration for this job).
"""
import argparse
import asyncio
import os
import socket
import statistics
import subprocess
import sys
import threading
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


class ConsoleClock:
    """Reads a process's console on a thread of its own, noting when the first and the last
    bytes came."""

    def __init__(self, process):
        self.first = None
        self.last = None
        self.thread = threading.Thread(target=self._read, args=(process.stdout.fileno(),), daemon=True)
        self.thread.start()

    def _read(self, fd):
        while True:
            try:
                chunk = os.read(fd, 65536)
            except OSError:
                return
            if not chunk:
                return
            now = time.monotonic()
            self.first = self.first or now
            self.last = now


def main():
    parser = argparse.ArgumentParser()
    for option in ("skvm", "qemu", "probe", "dirty-probe", "bios", "entry", "out"):
        parser.add_argument(f"--{option}", required=True)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--vmms", default="skvm,qemu", help="which VMMs to run (comma-separated)")
    parser.add_argument("--workloads", default="idle,dirtying", help="which guests to run (comma-separated)")
    args = parser.parse_args()
    out = args.out
    source_socket = os.path.join(out, "source.sock")
    destination_socket = os.path.join(out, "destination.sock")
    qcow2 = os.path.join(out, "disk.qcow2")
    workloads = {"idle": args.probe, "dirtying": args.dirty_probe}
    workloads = {name: probe for name, probe in workloads.items() if name in args.workloads.split(",")}
    vmms = [vmm for vmm in ("skvm", "qemu") if vmm in args.vmms.split(",")]

    def skvm_command(probe):
        return [args.skvm, "run", "--flat", probe, "--flat-entry", "long", "--memory", "256M", "--disk", qcow2]

    def qemu_command(probe):
        return [args.qemu, "-M", "q35", "-enable-kvm", "-cpu", "host,-arch-capabilities", "-m", "256",
                "-nodefaults", "-display", "none", "-serial", "stdio", "-no-reboot", "-bios", args.bios,
                "-device", f"loader,file={args.entry},addr=0x8000,force-raw=on",
                "-device", f"loader,file={probe},addr=0x10000,force-raw=on",
                "-drive", f"file={qcow2},format=qcow2,if=none,id=d0", "-device", "virtio-blk-pci,drive=d0"]

    samples = {}

    def add(name, value):
        samples.setdefault(name, []).append(value)

    traced = any(name.startswith("SKVM_TRACE_") for name in os.environ)
    for run in range(args.runs):
        for workload, probe in workloads.items():
            for vmm in vmms:
                for path in (source_socket, destination_socket):
                    if os.path.exists(path):
                        os.unlink(path)
                subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", qcow2, "64M"], check=True)
                port = free_port()
                if vmm == "skvm":
                    source, _ = start(skvm_command(probe) + ["--qmp", f"unix:{source_socket}"])
                    # Traced (SKVM_TRACE_*): the destination's --stats too, printed when it has quit.
                    destination = subprocess.Popen(
                        [args.skvm, "run", "--incoming", f"tcp::{port}", "--qmp", f"unix:{destination_socket}"]
                        + (["--stats"] if traced else []),
                        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
                    # It prints when it listens.
                    destination.stderr.readline()
                else:
                    source, _ = start(qemu_command(probe) + ["-qmp", f"unix:{source_socket},server=on,wait=off"])
                    destination = subprocess.Popen(
                        qemu_command(probe) + ["-incoming", f"tcp:127.0.0.1:{port}",
                                               "-qmp", f"unix:{destination_socket},server=on,wait=off"],
                        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
                    time.sleep(0.5)  # QEMU listens once it has built the machine
                source_clock, destination_clock = ConsoleClock(source), ConsoleClock(destination)
                time.sleep(0.3)  # the guest runs a while first
                info, wall = asyncio.run(migrate(source_socket, f"tcp:127.0.0.1:{port}"))
                # The destination runs the guest on: it prints.
                deadline = time.monotonic() + 5
                while destination_clock.first is None and time.monotonic() < deadline:
                    time.sleep(0.01)
                name = f"{vmm} {workload}"
                if info.get("status") != "completed" or destination_clock.first is None:
                    print(f"  {name} run {run + 1}: {info}", flush=True)
                else:
                    pause = (destination_clock.first - source_clock.last) * 1000
                    add(f"{name} total ms", info["total-time"])
                    add(f"{name} downtime ms", info["downtime"])
                    add(f"{name} pause ms", pause)
                    add(f"{name} MiB sent", info["ram"]["transferred"] / 2**20)
                    print(f"  {name} run {run + 1}: total {info['total-time']} ms, downtime {info['downtime']} ms, "
                          f"guest pause {pause:.1f} ms, {info['ram']['transferred'] / 2**20:.1f} MiB "
                          f"in {info['ram'].get('dirty-sync-count', 0)} passes", flush=True)
                drain(source)
                try:
                    asyncio.run(quit_destination(destination_socket))
                finally:
                    drain(destination)
                    if traced and vmm == "skvm":
                        sys.stderr.write(destination.stderr.read().decode(errors="replace"))
    median = {name: statistics.median(values) for name, values in samples.items()}
    print(f"\nlive migration of a 256 MiB probe guest (64 MiB written) over loopback, medians of {args.runs};"
          "\nidle: nothing written after start; dirtying: a page every 2^18 TSC ticks (34 MiB/s at 2.3 GHz)\n")
    keys = ("total ms", "downtime ms", "pause ms", "MiB sent")
    headers = ("total ms", "downtime ms", "guest pause ms", "MiB sent")
    print(f"{'':<16}" + "".join(f"{h:>16}" for h in headers))
    for workload in workloads:
        for vmm in vmms:
            cells = [median.get(f"{vmm} {workload} {key}") for key in keys]
            print(f"{vmm + ' ' + workload:<16}" + "".join(f"{'—' if v is None else f'{v:.1f}':>16}" for v in cells))
    for workload in workloads:
        skvm, qemu = f"skvm {workload}", f"qemu {workload}"
        if f"{skvm} pause ms" in median and f"{qemu} pause ms" in median:
            report(f"migrate: guest pause ({workload} guest)", "ms", median[f"{skvm} pause ms"],
                   {"qemu": median[f"{qemu} pause ms"]}, ratio_goal=0.5,
                   value_goal=50 if workload == "idle" else None)
            report(f"migrate: downtime as reported ({workload} guest)", "ms", median[f"{skvm} downtime ms"],
                   {"qemu": median[f"{qemu} downtime ms"]})
            report(f"migrate: total time ({workload} guest)", "ms", median[f"{skvm} total ms"],
                   {"qemu": median[f"{qemu} total ms"]}, ratio_goal=1.0)


async def quit_destination(socket_path):
    client = await connect(socket_path)
    try:
        await client.execute("quit")
        await client.disconnect()
    except Exception:
        pass


if __name__ == "__main__":
    main()
