#!/usr/bin/env python3
"""Live migration of a running probe guest between skvm processes on this host, with the
official QMP client (PyPI qemu.qmp). The probe (Probes/probes/snapshot_workload.c) keeps
rewriting RAM (a pattern, page generations), does virtio-blk I/O and prints
"beat B counter C ticks T io I aps A"; after each hop every figure must carry on and nothing
may print FAIL — a page dirtied and not sent again would fail the pattern check.

  migrate_check.py --skvm SKVM --probe WORKLOAD.bin --cpus N --hops N

Also: a source killed mid-way leaves the destination exiting 1 with the disk unlocked; a destination that cannot open the source's NIC back end (a hostfwd port bound on this
host) refuses before RAM moves; a --incoming defer destination quits cleanly while it listens.

Checks: HOPS migrations in a row (the destination of one is the source of the next; the second
one's waits with --incoming defer for QMP migrate-incoming) with
MIGRATION events setup/active/device/completed, query-migrate's RAM figures and the source in
postmigrate; a migration cancelled mid-way (the source runs on, the destination exits with
an error); a destination killed mid-way (the source runs on). Prints "migrate_check: ok …".
"""
import argparse
import asyncio
import fcntl
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time

from qemu.qmp import QMPClient

BEAT = re.compile(rb"beat (\d+) counter (\d+) ticks (\d+) io (\d+) aps (\d+)")


class CheckFailed(Exception):
    pass


def check(condition, what):
    if not condition:
        raise CheckFailed(what)


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def beats_of(path):
    return [tuple(int(x) for x in match) for match in BEAT.findall(open(path, "rb").read())]


def wait_for(path, what, process, timeout=90):
    deadline = time.monotonic() + timeout
    while what(open(path, "rb").read()) is False:
        if process.poll() is not None or time.monotonic() > deadline:
            raise CheckFailed(f"{path}: gave up waiting (exit {process.poll()}): {open(path, 'rb').read()[-600:]}")
        time.sleep(0.005)


STARTED = []


class VM:
    def __init__(self, directory, name, command):
        self.log = os.path.join(directory, f"{name}.txt")
        self.socket = os.path.join(directory, f"{name}.qmp")
        self.process = subprocess.Popen(command + ["--qmp", f"unix:{self.socket}"], stdout=open(self.log, "wb"),
                                        stderr=subprocess.STDOUT)
        self.name = name
        STARTED.append(self)

    def output(self):
        return open(self.log, "rb").read()

    def wait_beats(self, count, timeout=90):
        wait_for(self.log, lambda text: len(BEAT.findall(text)) >= count or False, self.process, timeout)
        return beats_of(self.log)


async def migrate(source, uri, parameters=None, interrupt=None, stop_first=False):
    """Runs QMP migrate on `source` (stopped first if asked); `interrupt(info)` may act mid-way
    (returns True once done)."""
    client = QMPClient("migrate-check")
    await client.connect(source.socket)
    if stop_first:
        await client.execute("stop")
    events = []
    passes = []

    async def collect():
        async for event in client.events:
            if event["event"] == "MIGRATION":
                events.append(event["data"]["status"])
            elif event["event"] == "MIGRATION_PASS":
                passes.append(event["data"]["pass"])

    listener = asyncio.create_task(collect())
    if parameters:
        await client.execute("migrate-set-parameters", parameters)
    await client.execute("migrate", {"uri": uri})
    deadline = time.monotonic() + 90
    interrupted = False
    while True:
        info = await client.execute("query-migrate")
        if info.get("status") in ("completed", "failed", "cancelled") or time.monotonic() > deadline:
            break
        if interrupt and not interrupted and info.get("status") == "active":
            interrupted = await interrupt(client, info)
        await asyncio.sleep(0.005)
    status = await client.execute("query-status")
    info["hmp"] = await client.execute("human-monitor-command", {"command-line": "info migrate"})
    if parameters:
        await client.execute("migrate-set-parameters", {"max-bandwidth": 0})
    await asyncio.sleep(0.05)
    listener.cancel()
    await client.disconnect()
    info["passes"] = passes
    return info, status, events


async def prepare_deferred(destination, port):
    """`--incoming defer`: the destination's monitor answers before the machine exists, refuses what
    needs the machine, and starts listening on migrate-incoming (once). Returns the connected client
    and the MIGRATION events it collects."""
    client = QMPClient("migrate-check-destination")
    await client.connect(destination.socket)
    events = []

    async def collect():
        async for event in client.events:
            if event["event"] == "MIGRATION":
                events.append(event["data"]["status"])

    client.collector = asyncio.create_task(collect())
    status = await client.execute("query-status")
    check(status["status"] == "inmigrate" and not status["running"], f"defer: query-status {status}")
    check(await client.execute("query-migrate") == {}, "defer: query-migrate before migrate-incoming")
    for command, arguments, expected in (("stop", None, "migrate-incoming"),
                                         ("migrate-incoming", {"uri": "unix:/nope"}, "tcp:"),
                                         ("migrate-incoming", {"uri": "tcp:127.0.0.1:99999"}, "port")):
        try:
            await client.execute(command, arguments)
            raise CheckFailed(f"defer: {command} {arguments} succeeded")
        except CheckFailed:
            raise
        except Exception as error:
            check(expected in str(error), f"defer: {command} {arguments} said {error}")
    await client.execute("migrate-incoming", {"uri": f"tcp:127.0.0.1:{port}"})
    try:
        await client.execute("migrate-incoming", {"uri": f"tcp:127.0.0.1:{port}"})
        raise CheckFailed("defer: a second migrate-incoming succeeded")
    except CheckFailed:
        raise
    except Exception as error:
        check("already" in str(error), f"defer: a second migrate-incoming said {error}")
    check((await client.execute("query-migrate")).get("status") == "setup", "defer: query-migrate after it")
    return client, events


async def deferred_migration(source, destination, port):
    """Migrates `source` into a `--incoming defer` destination, its client connected throughout;
    afterwards the same client drives the machine."""
    client, events = await prepare_deferred(destination, port)
    result = await migrate(source, f"tcp:127.0.0.1:{port}")
    for _ in range(200):
        status = await client.execute("query-status")
        if status["status"] == "running":
            break
        await asyncio.sleep(0.01)
    check(status["status"] == "running", f"defer: the destination is {status} after the migration")
    check(events == ["setup", "active", "completed"], f"defer: the destination's MIGRATION events {events}")
    client.collector.cancel()
    await client.disconnect()
    return result


async def expect_paused_then_continue(vm):
    client = QMPClient("migrate-check")
    await client.connect(vm.socket)
    status = await client.execute("query-status")
    check(status["status"] == "paused", f"a stopped guest migrated: the destination is {status}")
    count = len(beats_of(vm.log))
    await asyncio.sleep(0.3)
    check(len(beats_of(vm.log)) == count, "a stopped guest migrated: it runs on the destination")
    await client.execute("cont")
    await client.disconnect()


async def quit_vm(vm):
    client = QMPClient("migrate-check")
    await client.connect(vm.socket)
    await client.execute("quit")
    try:
        await client.disconnect()
    except EOFError:
        pass


def run(args):
    directory = tempfile.mkdtemp(prefix="skvm-migrate-")
    disk = os.path.join(directory, "disk.raw")
    with open(disk, "wb") as f:
        f.truncate(1 << 20)
    source = VM(directory, "vm0", [args.skvm, "run", "--flat", args.probe, "--flat-entry", "long", "--cpus",
                                   str(args.cpus), "--memory", "64M", "--disk", disk])
    source.wait_beats(3)
    downtimes = []
    phases = [("start", time.monotonic())]
    for hop in range(1, args.hops + 1):
        port = free_port()
        # The second hop's destination waits for QMP migrate-incoming (--incoming defer).
        deferred = hop == 2
        destination = VM(directory, f"vm{hop}",
                         [args.skvm, "run", "--incoming", "defer" if deferred else f"tcp::{port}"])
        wait_for(destination.log, lambda text: b"waiting for " in text or False, destination.process)
        last = beats_of(source.log)[-1]
        # The third hop migrates a guest its user stopped: it stays stopped there until cont.
        stopped = hop == 3
        if deferred:
            info, status, events = asyncio.run(deferred_migration(source, destination, port))
        else:
            info, status, events = asyncio.run(migrate(source, f"tcp:127.0.0.1:{port}", stop_first=stopped))
        check(info.get("status") == "completed", f"hop {hop}: migrate gave {info}; source: {source.output()[-400:]}")
        check(status["status"] == "postmigrate", f"hop {hop}: the source is {status}")
        check(events[:2] == ["setup", "active"] and "device" in events and events[-1] == "completed",
              f"hop {hop}: MIGRATION events {events}")
        ram = info["ram"]
        check(ram["dirty-sync-count"] >= 1 and ram["transferred"] > 0 and ram["total"] == 64 << 20,
              f"hop {hop}: RAM figures {ram}")
        check(info["passes"] == list(range(1, ram["dirty-sync-count"] + 1)),
              f"hop {hop}: MIGRATION_PASS events {info['passes']} for {ram['dirty-sync-count']} passes")
        downtimes.append(info["downtime"])
        check("Migration status: completed" in info["hmp"] and "dirty sync count:" in info["hmp"],
              f"hop {hop}: HMP info migrate said {info['hmp']!r}")
        asyncio.run(quit_vm(source))
        check(source.process.wait(30) == 0, f"hop {hop}: the source exited {source.process.returncode}")
        check(b"FAIL" not in source.output(), f"hop {hop}: the source's guest failed: {source.output()[-400:]}")
        if stopped:
            asyncio.run(expect_paused_then_continue(destination))
        beats = destination.wait_beats(3)
        first = beats[0]
        check(first[0] >= last[0] and first[2] >= last[2] and first[3] >= last[3],
              f"hop {hop}: the guest did not carry on: {last} then {first}")
        check(b"FAIL" not in destination.output(), f"hop {hop}: {destination.output()[-400:]}")
        if args.cpus > 1:
            check(max(beat[4] for beat in beats) == args.cpus - 1, f"hop {hop}: APs stopped: {beats}")
        source = destination

    def interrupted_migration(name, action):
        """Migrates slowed to 4 MiB/s and runs `action(client, destination)` once 1 MiB has moved."""
        port = free_port()
        destination = VM(directory, name, [args.skvm, "run", "--incoming", f"tcp::{port}"])
        wait_for(destination.log, lambda text: b"waiting for a migration" in text or False, destination.process)

        async def interrupt(client, info):
            if info.get("ram", {}).get("transferred", 0) < (1 << 20):
                return False
            await action(client, destination)
            return True

        info, status, _ = asyncio.run(
            migrate(source, f"tcp:127.0.0.1:{port}", {"max-bandwidth": 4 << 20}, interrupt=interrupt))
        return destination, info, status

    phases.append(("hops", time.monotonic()))
    # Cancelled mid-way: the source runs on, the destination says why it ends.
    async def cancel(client, destination):
        await client.execute("migrate_cancel")

    destination, info, status = interrupted_migration("cancelled", cancel)
    check(info.get("status") == "cancelled" and status["status"] == "running", f"cancel: {info}, {status}")
    check(destination.process.wait(30) != 0, "cancel: the destination should exit with an error")
    check(b"cancelled" in destination.output(), f"cancel: the destination said {destination.output()[-300:]}")
    count = len(beats_of(source.log))
    source.wait_beats(count + 3)

    phases.append(("cancel", time.monotonic()))
    # The destination killed mid-way: the source runs on.
    async def kill(client, destination):
        destination.process.send_signal(signal.SIGKILL)

    destination, info, status = interrupted_migration("killed", kill)
    check(info.get("status") == "failed" and status["status"] == "running", f"kill: {info}, {status}")
    check("error-desc" in info, f"kill: no error-desc in {info}")
    count = len(beats_of(source.log))
    source.wait_beats(count + 3)
    check(b"FAIL" not in source.output(), f"after kill: {source.output()[-400:]}")
    asyncio.run(quit_vm(source))
    source.process.wait(30)

    phases.append(("killed destination", time.monotonic()))
    # A NIC back end the destination cannot open (on one host: the source's hostfwd port is
    # bound) is refused before any RAM moves; the source runs on.
    forwarded = free_port()
    nic_source = VM(directory, "nic-source", [args.skvm, "run", "--flat", args.probe, "--flat-entry", "long",
                                              "--memory", "64M", "--disk", disk,
                                              "--net", f"user,hostfwd=tcp:127.0.0.1:{forwarded}-:80"])
    nic_source.wait_beats(2)
    port = free_port()
    nic_destination = VM(directory, "nic-destination", [args.skvm, "run", "--incoming", f"tcp::{port}"])
    wait_for(nic_destination.log, lambda text: b"waiting for a migration" in text or False, nic_destination.process)
    info, status, _ = asyncio.run(migrate(nic_source, f"tcp:127.0.0.1:{port}"))
    check(info.get("status") == "failed" and status["status"] == "running", f"busy NIC: {info}, {status}")
    check("another host" in info.get("error-desc", "") and info["ram"]["transferred"] < (1 << 20),
          f"busy NIC: {info}")
    check(nic_destination.process.wait(30) == 1, f"busy NIC: the destination exited {nic_destination.process.returncode}")
    count = len(beats_of(nic_source.log))
    nic_source.wait_beats(count + 2)
    asyncio.run(quit_vm(nic_source))
    nic_source.process.wait(30)

    phases.append(("busy NIC", time.monotonic()))
    # The source killed mid-way: the destination exits with an error naming the source, and
    # leaves the disk image unlocked (it had not opened it yet).
    async def start_slow_migration(vm, uri):
        client = QMPClient("migrate-check-killed-source")
        await client.connect(vm.socket)
        await client.execute("migrate-set-parameters", {"max-bandwidth": 4 << 20})
        await client.execute("migrate", {"uri": uri})
        while (await client.execute("query-migrate")).get("ram", {}).get("transferred", 0) < (1 << 20):
            await asyncio.sleep(0.01)
        vm.process.send_signal(signal.SIGKILL)
        vm.process.wait(10)

    doomed = VM(directory, "doomed", [args.skvm, "run", "--flat", args.probe, "--flat-entry", "long",
                                      "--memory", "64M", "--disk", disk])
    doomed.wait_beats(2)
    port = free_port()
    orphan = VM(directory, "orphan", [args.skvm, "run", "--incoming", f"tcp::{port}"])
    wait_for(orphan.log, lambda text: b"waiting for a migration" in text or False, orphan.process)
    try:
        asyncio.run(start_slow_migration(doomed, f"tcp:127.0.0.1:{port}"))
    except Exception:
        pass  # the monitor's connection dies with the source
    check(orphan.process.wait(90) == 1, f"killed source: the destination exited {orphan.process.returncode}")
    check(b"migration source" in orphan.output(), f"killed source: the destination said {orphan.output()[-300:]}")
    with open(disk, "r+b") as image:
        fcntl.flock(image, fcntl.LOCK_EX | fcntl.LOCK_NB)  # raises if anything still holds it

    phases.append(("killed source", time.monotonic()))
    # A deferred destination told to quit while it listens ends at once, status 0.
    async def quit_listening(vm):
        client, _ = await prepare_deferred(vm, free_port())
        client.collector.cancel()
        await client.execute("quit")
        try:
            await client.disconnect()
        except EOFError:
            pass  # it has gone, as asked

    waiting = VM(directory, "waiting", [args.skvm, "run", "--incoming", "defer"])
    wait_for(waiting.log, lambda text: b"migrate-incoming" in text or False, waiting.process)
    asyncio.run(quit_listening(waiting))
    check(waiting.process.wait(10) == 0, f"defer: quit while listening: exit {waiting.process.returncode}")
    check(not os.path.exists(waiting.socket), "defer: the monitor socket stayed behind")
    phases.append(("defer quit", time.monotonic()))
    downtimes.sort()
    print(f"migrate_check: ok: {args.hops} hops with {args.cpus} vCPUs (one into --incoming defer, one stopped), a cancel, a killed "
          "destination, a killed source, a NIC the destination cannot open; "
          f"downtime median {downtimes[len(downtimes) // 2]} ms; seconds: "
          + ", ".join(f"{name} {end - start:.1f}" for (_, start), (name, end) in zip(phases, phases[1:])), flush=True)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--skvm", required=True)
    parser.add_argument("--probe", required=True)
    parser.add_argument("--cpus", type=int, default=2)
    parser.add_argument("--hops", type=int, default=3)
    args = parser.parse_args()
    try:
        run(args)
    except Exception as error:  # noqa: BLE001 — any failure is reported with every VM's state
        print(f"migrate_check: FAILED: {type(error).__name__}: {error}", flush=True)
        for vm in STARTED:  # what each VM said last, and whether it is still running
            tail = vm.output()[-300:].decode(errors="replace")
            print(f"--- {vm.name} (exit {vm.process.poll()}):\n{tail}", flush=True)
        return 1
    finally:
        for vm in STARTED:  # nothing left running, whatever happened
            if vm.process.poll() is None:
                vm.process.kill()
    return 0


if __name__ == "__main__":
    sys.exit(main())
