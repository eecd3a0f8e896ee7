#!/usr/bin/env python3
"""Drives `skvm run` with a busy probe guest through its QMP socket, with the official
client (PyPI qemu.qmp) and with raw, hostile sockets. Prints "qmp_check: <scenario> ok"
and exits 0 when every check held; otherwise names the failed check and exits 1.

  qmp_check.py --scenario lifecycle|hostile|stress --skvm SKVM --probe BUSY.bin [--cpus N] [--commands N]
"""
import argparse
import asyncio
import json
import os
import random
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import time

from qemu.qmp import QMPClient
from qemu.qmp.error import QMPError
from qemu.qmp.qmp_client import ExecuteError


class CheckFailed(Exception):
    pass


def check(condition, what):
    if not condition:
        raise CheckFailed(what)
    print(f"  ok: {what}", flush=True)


class Machine:
    """skvm run with the busy probe and a QMP socket; its console goes to a file."""

    def __init__(self, skvm, probe, cpus, directory):
        self.socket = os.path.join(directory, "qmp.sock")
        self.disk = os.path.join(directory, "disk.raw")
        with open(self.disk, "wb") as f:
            f.truncate(1 << 20)
        self.console = os.path.join(directory, "console.txt")
        self.log = open(self.console, "wb")
        # umask 000: the socket must still be 0600 (only this user may drive the machine).
        self.process = subprocess.Popen(
            [skvm, "run", "--flat-entry", "long", "--flat", probe, "--cpus", str(cpus), "--name", "probe-vm",
             "--qmp", f"unix:{self.socket},server=on,wait=off", "--disk", self.disk],
            stdin=subprocess.DEVNULL, stdout=self.log, stderr=subprocess.STDOUT, preexec_fn=lambda: os.umask(0))
        deadline = time.monotonic() + 20
        while not os.path.exists(self.socket):
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise CheckFailed(f"skvm did not open its QMP socket: {self.output()}")
            time.sleep(0.02)

    def output(self):
        with open(self.console, "rb") as f:
            return f.read().decode(errors="replace")

    def ticks(self):
        return self.output().count("tick ")

    def wait_ticks_grow(self, timeout=10):
        start = self.ticks()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.ticks() > start:
                return True
            time.sleep(0.02)
        return False

    def rss_kib(self):
        with open(f"/proc/{self.process.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        return 0

    def finish(self, timeout=20):
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise CheckFailed("skvm did not exit after quit")


async def next_event(client, name, timeout=10):
    async def wait():
        async for event in client.events:
            if event["event"] == name:
                return event
    return await asyncio.wait_for(wait(), timeout)


def raw_stop_cont(path):
    """stop then cont over a plain socket; every message after capabilities, in order."""
    with socket.socket(socket.AF_UNIX) as raw:
        raw.settimeout(10)
        raw.connect(path)
        reader = raw.makefile("rb")
        json.loads(reader.readline())  # the greeting
        raw.sendall(b'{"execute":"qmp_capabilities"}\n')
        json.loads(reader.readline())
        lines = []
        for command in (b"stop", b"cont"):
            raw.sendall(b'{"execute":"' + command + b'"}\n')
            lines.append(json.loads(reader.readline()))
            while "return" not in lines[-1] and "error" not in lines[-1]:
                lines.append(json.loads(reader.readline()))
        return lines


async def lifecycle(machine, cpus):
    mode = stat.S_IMODE(os.stat(machine.socket).st_mode)
    check(mode == 0o600, f"the socket is mode 0600 under umask 000 (got {mode:o})")
    client = QMPClient("lifecycle")
    await client.connect(machine.socket)
    check(client.greeting is not None and client.greeting.QMP.version is not None, "greeting with a version")
    status = await client.execute("query-status")
    check(status["status"] == "running" and status["running"] is True, f"query-status running ({status})")
    check((await client.execute("query-name"))["name"] == "probe-vm", "query-name")
    names = {entry["name"] for entry in await client.execute("query-commands")}
    wanted = {"qmp_capabilities", "query-version", "query-commands", "query-name", "query-status", "stop", "cont",
              "system_reset", "system_powerdown", "quit", "query-cpus-fast", "query-kvm", "query-block",
              "query-chardev", "query-pci", "human-monitor-command"}
    check(wanted <= names, f"query-commands lists every command (missing {wanted - names})")
    check(await client.execute("query-kvm") == {"enabled": True, "present": True}, "query-kvm")
    kvm = await client.execute("human-monitor-command", {"command-line": "info kvm"})
    check("kvm support: enabled" in kvm, f"info kvm ({kvm!r})")
    check(machine.wait_ticks_grow(), "the guest runs")

    await client.execute("stop")
    event = await next_event(client, "STOP")
    check("timestamp" in event and "seconds" in event["timestamp"], "STOP event with a timestamp")
    check((await client.execute("query-status"))["status"] == "paused", "query-status paused after stop")
    info = await client.execute("human-monitor-command", {"command-line": "info status"})
    check(info.strip() == "VM status: paused", f"info status paused ({info!r})")
    frozen = machine.ticks()
    await asyncio.sleep(0.6)
    check(machine.ticks() == frozen, "no guest progress while paused")
    registers = await client.execute("human-monitor-command", {"command-line": "info registers -a"})
    check(all(f"CPU#{index}" in registers for index in range(cpus)) and "RIP=" in registers and "CR3=" in registers,
          "info registers -a dumps every vCPU")
    await client.execute("cont")
    await next_event(client, "RESUME")
    check((await client.execute("query-status"))["status"] == "running", "query-status running after cont")
    # The STOP and RESUME a client's own stop and cont raise come before their replies (sent
    # together with them), and another client gets them too.
    lines = await asyncio.get_running_loop().run_in_executor(None, raw_stop_cont, machine.socket)
    check([line.get("event", "return" if "return" in line else "?") for line in lines] ==
          ["STOP", "return", "RESUME", "return"], f"a raw client's stop and cont: event, then reply ({lines})")
    await next_event(client, "STOP")
    await next_event(client, "RESUME")
    check(machine.wait_ticks_grow(), "the guest progresses after cont")

    cpus_fast = await client.execute("query-cpus-fast")
    threads = [entry["thread-id"] for entry in cpus_fast]
    check(len(cpus_fast) == cpus and [entry["cpu-index"] for entry in cpus_fast] == list(range(cpus)),
          "query-cpus-fast has every vCPU")
    check(all(os.path.exists(f"/proc/{machine.process.pid}/task/{tid}") for tid in threads),
          "query-cpus-fast thread ids are skvm's threads")
    info_cpus = await client.execute("human-monitor-command", {"command-line": "info cpus"})
    check(all(f"thread_id={tid}" in info_cpus for tid in threads), "info cpus shows the same threads")
    chardevs = await client.execute("query-chardev")
    check(any(dev["label"] == "serial0" for dev in chardevs) and
          any(machine.socket in dev["filename"] for dev in chardevs), "query-chardev lists serial and monitor")
    blocks = await client.execute("query-block")
    check(len(blocks) == 1 and blocks[0]["inserted"]["file"] == machine.disk and blocks[0]["inserted"]["ro"] is False,
          f"query-block lists the disk ({blocks})")
    pci = await client.execute("query-pci")
    devices = {d["slot"]: d for d in pci[0]["devices"]}
    check((devices[0]["id"]["vendor"], devices[0]["id"]["device"]) == (0x1B36, 0x0008)
          and devices[1]["id"]["vendor"] == 0x1AF4 and devices[1]["id"]["device"] == 0x1042
          and devices[1]["class_info"]["class"] == 0x0180 and devices[1]["irq_pin"] == 1 and devices[1]["irq"] == 17
          and devices[1]["regions"] == [{"bar": 0, "type": "memory", "address": 0xE0000000, "size": 0x4000,
                                         "prefetch": False, "mem_type_64": True}],
          f"query-pci lists the host bridge and the virtio-blk function with its BAR ({pci})")
    info_pci = await client.execute("human-monitor-command", {"command-line": "info pci"})
    check("Storage controller: PCI device 1af4:1042" in info_pci
          and "BAR0: 64 bit memory at 0xe0000000 [0xe0003fff]." in info_pci, f"info pci ({info_pci!r})")
    qtree = await client.execute("human-monitor-command", {"command-line": "info qtree"})
    check("SerialPort" in qtree and "0x3f8" in qtree, "info qtree lists the devices")

    boots = machine.output().count("busy:")
    await client.execute("system_reset")
    event = await next_event(client, "RESET")
    check(event["data"] == {"guest": False, "reason": "host-qmp-system-reset"}, f"RESET event data ({event})")
    deadline = time.monotonic() + 10
    while machine.output().count("busy:") == boots and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    check(machine.output().count("busy:") == boots + 1, "the guest boots again after system_reset")
    check((await client.execute("query-status"))["status"] == "running", "running after reset")

    # Reset while paused: the fresh machine stays paused until cont.
    await client.execute("stop")
    await next_event(client, "STOP")
    await client.execute("system_reset")
    await next_event(client, "RESET")
    check((await client.execute("query-status"))["status"] == "paused", "a reset while paused stays paused")
    await client.execute("cont")
    await next_event(client, "RESUME")

    await client.execute("system_powerdown")
    await next_event(client, "POWERDOWN")
    check(True, "POWERDOWN event after system_powerdown")

    try:
        await client.execute("no-such-command")
        check(False, "an unknown command fails")
    except ExecuteError as error:
        check(error.error.error.class_ == "CommandNotFound", "unknown command: CommandNotFound")

    await client.execute("quit")
    event = await next_event(client, "SHUTDOWN")
    check(event["data"] == {"guest": False, "reason": "host-qmp-quit"}, f"SHUTDOWN event data ({event})")
    await disconnect_after_quit(client)
    status = machine.finish()
    check(status == 0, f"quit ends skvm with status 0 (got {status})")
    check(not os.path.exists(machine.socket), "the socket file is removed on exit")


async def disconnect_after_quit(client):
    """After quit the VMM closes the connection, as QEMU does; qemu.qmp reports that EOF."""
    try:
        await client.disconnect()
    except EOFError:
        pass


def raw_exchange(path, payload, expected=1, read_until_close=False, timeout=10.0):
    """Sends payload (after negotiating) on a fresh socket; returns the replies that followed
    (at least `expected` of them unless the server closed first or time ran out) and whether
    the server closed the connection."""
    connection = socket.socket(socket.AF_UNIX)
    connection.settimeout(timeout)
    connection.connect(path)
    data = b""
    while b"\n" not in data:
        data += connection.recv(4096)
    connection.sendall(b'{"execute": "qmp_capabilities"}\n')
    replies = []
    buffer = b""
    try:
        connection.sendall(payload)
    except (BrokenPipeError, ConnectionResetError):
        pass
    deadline = time.monotonic() + timeout
    closed = False
    while time.monotonic() < deadline:
        try:
            chunk = connection.recv(65536)
        except socket.timeout:
            break
        except ConnectionResetError:
            closed = True
            break
        if not chunk:
            closed = True
            break
        buffer += chunk
        *lines, buffer = buffer.split(b"\n")
        replies += [json.loads(line) for line in lines if line.strip()]
        if not read_until_close and len(replies) >= expected + 1:
            break
    connection.close()
    return replies[1:], closed


def negotiated_raw(path):
    """A raw connection that reads the greeting, negotiates capabilities (so it is sent events)
    and then never reads again; returns it and the first line the monitor sent."""
    connection = socket.socket(socket.AF_UNIX)
    connection.connect(path)
    connection.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    connection.settimeout(5)
    first = b""
    try:
        while b"\n" not in first:
            chunk = connection.recv(1)
            if not chunk:
                break
            first += chunk
    except (socket.timeout, ConnectionResetError):
        pass
    if b'"QMP"' in first:
        connection.sendall(b'{"execute": "qmp_capabilities"}\n')
        reply = b""
        try:
            while b"\n" not in reply:
                chunk = connection.recv(1)
                if not chunk:
                    break
                reply += chunk
        except (socket.timeout, ConnectionResetError):
            pass
    return connection, first


async def hostile(machine, cpus):
    observer = QMPClient("observer")
    await observer.connect(machine.socket)
    idle = socket.socket(socket.AF_UNIX)
    idle.connect(machine.socket)
    idle_since = time.monotonic()
    # Read on a thread of its own, so the moment skvm cuts it off is seen whatever the checks
    # below take (on an emulated host, far longer than the 10 s limit).
    idle_seen = {"data": b"", "closed_at": None}

    def watch_idle():
        idle.settimeout(60)
        try:
            while True:
                chunk = idle.recv(4096)
                if not chunk:
                    idle_seen["closed_at"] = time.monotonic()
                    break
                idle_seen["data"] += chunk
        except (socket.timeout, OSError):
            pass

    idle_watcher = threading.Thread(target=watch_idle, daemon=True)
    idle_watcher.start()

    replies, _ = raw_exchange(machine.socket, b"garbage \x00\xff\xfe nonsense\n")
    check(replies and all("error" in reply for reply in replies), f"garbage bytes get error replies ({replies[:2]})")
    replies, _ = raw_exchange(machine.socket, b'{"execute": }\n{"execute": "query-status"}\n', expected=2)
    check(replies[0]["error"]["class"] == "GenericError" and "return" in replies[1],
          "invalid JSON gets an error and the next request works")
    replies, _ = raw_exchange(machine.socket, b'[1, 2]\n{"execute": 42}\n', expected=2)
    check(replies[0]["error"]["desc"] == "QMP input must be a JSON object" and
          replies[1]["error"]["desc"] == "QMP input member 'execute' must be a string", "non-object input rejected")
    replies, _ = raw_exchange(machine.socket, b'{"execute": "human-monitor-command", "arguments": {"command-line": 5}, "id": 7}\n'
                              b'{"execute": "query-status", "arguments": {"bogus": 1}}\n', expected=2)
    check(replies[0]["id"] == 7 and "Invalid parameter type" in replies[0]["error"]["desc"], "wrong argument type named")
    check("Parameter 'bogus' is unexpected" in replies[1]["error"]["desc"], "unexpected argument named")
    replies, closed = raw_exchange(machine.socket, b'{"execute": "' + b"a" * (16 << 20) + b'"}\n', read_until_close=True,
                                   timeout=20)
    check(closed and replies and "error" in replies[0], "a 16 MiB request gets an error and a disconnect")
    replies, closed = raw_exchange(machine.socket, b"[" * 100000, read_until_close=True)
    check(closed and replies and "error" in replies[0], "absurd nesting gets an error and a disconnect")

    # A client that vanishes in the middle of a command.
    for _ in range(20):
        connection = socket.socket(socket.AF_UNIX)
        connection.connect(machine.socket)
        connection.sendall(b'{"execute": "qmp_capabilities"}\n{"execute": "query-st')
        connection.close()

    rss_before = machine.rss_kib()
    clients = []
    for index in range(4):
        client = QMPClient(f"load{index}")
        await client.connect(machine.socket)
        clients.append(client)

    async def hammer(client):
        answered = 0
        start = time.monotonic()
        for number in range(1000):
            await client.execute("query-status")
            answered += 1
            delay = start + (number + 1) / 1000 - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
        return answered, time.monotonic() - start

    results = await asyncio.gather(*(hammer(client) for client in clients))
    check(all(answered == 1000 for answered, _ in results),
          f"4 clients x 1000 commands at up to 1000/s each, all answered ({[round(t, 2) for _, t in results]} s)")
    for client in clients:
        await client.disconnect()
    rss_after = machine.rss_kib()
    check(rss_after < rss_before + 16 * 1024, f"memory stays bounded (RSS {rss_before} -> {rss_after} KiB)")
    check(machine.wait_ticks_grow(), "the guest still runs")
    check((await observer.execute("query-status"))["status"] == "running", "a well-behaved client still gets answers")

    # Clients that negotiate and then never read: events pile up in their own queues, nobody
    # waits for them, and they are cut off once they fall too far behind.
    stuck = [negotiated_raw(machine.socket)[0] for _ in range(8)]
    await asyncio.sleep(0.2)
    start = time.monotonic()
    for _ in range(40):
        await observer.execute("stop")
        await observer.execute("cont")
    elapsed = time.monotonic() - start
    check(elapsed < 5, f"40 stop/cont pairs with 8 clients that never read take {elapsed:.2f} s")
    check(machine.wait_ticks_grow(), "the guest still runs")
    for connection in stuck:
        connection.close()

    # A connection that never negotiates is cut off after the handshake limit (10 s), told why.
    idle_watcher.join(max(1.0, idle_since + 15 - time.monotonic()))
    data = idle_seen["data"]
    waited = (idle_seen["closed_at"] or time.monotonic()) - idle_since
    check(b"no qmp_capabilities within" in data and idle_seen["closed_at"] is not None and waited < 14,
          f"an idle connection is told and cut off after the handshake limit ({waited:.1f} s)")
    idle.close()

    # Idle connections cannot lock others out: 40 of them, and a newcomer is still served.
    squatters = []
    for _ in range(40):
        connection = socket.socket(socket.AF_UNIX)
        connection.connect(machine.socket)
        squatters.append(connection)
    await asyncio.sleep(0.3)
    newcomer = QMPClient("newcomer")
    await newcomer.connect(machine.socket)
    check((await newcomer.execute("query-status"))["status"] == "running",
          "40 idle connections do not keep a new client out")
    for connection in squatters:
        connection.close()
    await asyncio.sleep(0.3)

    # More negotiated clients than the monitor serves: the extra ones are told and cut off.
    served = [negotiated_raw(machine.socket) for _ in range(40)]
    refused = sum(1 for _, first in served if b"too many monitor clients" in first)
    for connection, _ in served:
        connection.close()
    check(refused >= 1, f"negotiated clients beyond the limit are refused ({refused} of 40)")
    await newcomer.disconnect()

    await observer.execute("quit")
    await disconnect_after_quit(observer)
    check(machine.finish() == 0, "quit still ends skvm with status 0")


async def stress(machine, cpus, commands):
    """Clients issuing random lifecycle commands at once, system_reset among them: skvm must
    answer every one and keep its guest, whatever the interleaving."""
    clients = []
    for index in range(4):
        client = QMPClient(f"stress{index}")
        await client.connect(machine.socket)
        clients.append(client)
    choices = ["stop", "cont", "system_reset", "query-status", "query-pci", "query-cpus-fast", "query-block",
               "info registers", "info pci", "info cpus", "system_powerdown"]

    async def hammer(client, seed):
        rng = random.Random(seed)
        answered = 0
        for _ in range(commands // len(clients)):
            choice = rng.choice(choices)
            if choice.startswith("info "):
                await client.execute("human-monitor-command", {"command-line": choice})
            else:
                await client.execute(choice)
            answered += 1
        return answered

    start = time.monotonic()
    results = await asyncio.gather(*(hammer(client, index) for index, client in enumerate(clients)))
    elapsed = time.monotonic() - start
    check(sum(results) == commands // len(clients) * len(clients),
          f"{sum(results)} random lifecycle commands from {len(clients)} clients answered in {elapsed:.1f} s")
    check(machine.process.poll() is None, "skvm is still running")
    await clients[0].execute("cont")
    check((await clients[0].execute("query-status"))["status"] == "running", "the machine runs after cont")
    check(machine.wait_ticks_grow(), "the guest makes progress")
    for client in clients[1:]:
        await client.disconnect()
    await clients[0].execute("quit")
    await disconnect_after_quit(clients[0])
    check(machine.finish() == 0, "quit still ends skvm with status 0")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--scenario", choices=["lifecycle", "hostile", "stress"], required=True)
    parser.add_argument("--commands", type=int, default=2000)
    parser.add_argument("--skvm", required=True)
    parser.add_argument("--probe", required=True)
    parser.add_argument("--cpus", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="skvm-qmp-") as directory:
        machine = Machine(args.skvm, args.probe, args.cpus, directory)
        try:
            if args.scenario == "stress":
                run = stress(machine, args.cpus, args.commands)
            else:
                run = (lifecycle if args.scenario == "lifecycle" else hostile)(machine, args.cpus)
            asyncio.run(asyncio.wait_for(run, 600))
        except (CheckFailed, QMPError, asyncio.TimeoutError, OSError, KeyError, IndexError, TypeError, AttributeError) as error:
            print(f"qmp_check: {args.scenario} FAILED: {type(error).__name__}: {error}", flush=True)
            print("--- console ---\n" + machine.output()[-400:], flush=True)
            if machine.process.poll() is None:
                machine.process.kill()
            return 1
        except BaseException:
            if machine.process.poll() is None:
                machine.process.kill()
            raise
    print(f"qmp_check: {args.scenario} ok", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
