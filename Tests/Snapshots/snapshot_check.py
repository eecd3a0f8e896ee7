#!/usr/bin/env python3
"""Saves and restores a running probe guest again and again, across processes, with the
official QMP client (PyPI qemu.qmp): each cycle starts `skvm run` (the first from the probe,
the others with --incoming file:), lets the guest work, saves it with QMP migrate to file:,
and quits. The probe (Probes/probes/snapshot_workload.c) prints
"beat B counter C ticks T io I aps A"; every figure must carry on from where the last process
left it — the counter, the LAPIC timer ticks, the virtio-blk requests (queue positions), the
application processors — and nothing may print FAIL.

  snapshot_check.py --skvm SKVM --probe WORKLOAD.bin --cpus N --cycles N [--mode mapped|copy]
  snapshot_check.py --scenario savevm --skvm SKVM --probe WORKLOAD.bin --cpus N
The savevm scenario takes internal snapshots (QMP snapshot-save jobs, HMP savevm) of a qcow2
disk, loads them back (snapshot-load, loadvm, --loadvm in a new process), deletes one, and has
qemu-img list and check the image. Prints "snapshot_check: ok …" and exits 0 when every check held.
"""
import argparse
import asyncio
import os
import re
import subprocess
import sys
import tempfile
import time

from qemu.qmp import QMPClient

BEAT = re.compile(rb"beat (\d+) counter (\d+) ticks (\d+) io (\d+) aps (\d+)")


class CheckFailed(Exception):
    pass


async def save_and_quit(socket_path, snapshot):
    client = QMPClient("snapshot-check")
    await client.connect(socket_path)
    events = []

    async def collect():
        async for event in client.events:
            if event["event"] == "MIGRATION":
                events.append(event["data"]["status"])

    listener = asyncio.create_task(collect())
    await client.execute("migrate", {"uri": f"file:{snapshot}"})
    deadline = time.monotonic() + 30
    while True:
        info = await client.execute("query-migrate")
        if info.get("status") in ("completed", "failed") or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.005)
    status = await client.execute("query-status")
    await asyncio.sleep(0.05)
    listener.cancel()
    await client.execute("quit")
    try:
        await client.disconnect()
    except EOFError:
        pass
    return info, status, events


def run(args):
    directory = tempfile.mkdtemp(prefix="skvm-snap-")
    socket_path = os.path.join(directory, "qmp.sock")
    snapshot = os.path.join(directory, "machine.snap")
    disk = os.path.join(directory, "disk.raw")
    with open(disk, "wb") as f:
        f.truncate(1 << 20)
    last = None
    restore_ms = []
    for cycle in range(args.cycles):
        command = [args.skvm, "run", "--qmp", f"unix:{socket_path}"]
        if cycle == 0:
            command += ["--flat", args.probe, "--flat-entry", "long", "--cpus", str(args.cpus), "--disk", disk]
        else:
            command += ["--incoming", f"file:{snapshot},mode={args.mode}"]
        log_path = os.path.join(directory, f"console{cycle}.txt")
        with open(log_path, "wb") as log:
            started = time.monotonic()
            process = spawn(command, log)
            while not os.path.exists(socket_path):
                if process.poll() is not None or time.monotonic() - started > 30:
                    raise CheckFailed(f"cycle {cycle}: skvm did not start: {open(log_path, 'rb').read()[-800:]}")
                time.sleep(0.001)
            # The first beat after the start: how long from exec to the guest working again.
            while not BEAT.search(open(log_path, "rb").read()):
                if process.poll() is not None or time.monotonic() - started > 30:
                    raise CheckFailed(f"cycle {cycle}: no beat: {open(log_path, 'rb').read()[-800:]}")
                time.sleep(0.001)
            restore_ms.append((time.monotonic() - started) * 1000)
            if cycle > 0 and args.mode == "copy":
                os.unlink(snapshot)  # copied in: the file is not needed any more
            time.sleep(args.run_seconds)
            # Every AP alive after the restore: wait (on a loaded host a cycle's run may hold a
            # single beat that caught an AP not scheduled yet) for a beat that saw all of them
            # move; an AP that never moves still fails below, after 30 s.
            waited = time.monotonic()
            while args.cpus > 1 and time.monotonic() - waited < 30 and process.poll() is None:
                seen = [int(match[4]) for match in BEAT.findall(open(log_path, "rb").read())]
                if seen and max(seen) == args.cpus - 1:
                    break
                time.sleep(0.01)
            t1 = time.monotonic()
            info, status, events = asyncio.run(save_and_quit(socket_path, snapshot))
            t2 = time.monotonic()
            process.wait(30)
            t3 = time.monotonic()
            if os.environ.get("SNAPSHOT_CHECK_TIMES"):
                print(f"cycle {cycle}: start {restore_ms[-1]:.0f} ms, save+quit {1000*(t2-t1):.0f} ms, exit {1000*(t3-t2):.0f} ms")
        output = open(log_path, "rb").read()
        if b"FAIL" in output:
            raise CheckFailed(f"cycle {cycle}: the guest found an inconsistency: {output[-600:]}")
        if info.get("status") != "completed" or status["status"] != "postmigrate":
            raise CheckFailed(f"cycle {cycle}: migrate gave {info}, status {status}")
        if events[:1] != ["setup"] or "completed" not in events:
            raise CheckFailed(f"cycle {cycle}: MIGRATION events {events}")
        beats = [tuple(int(x) for x in match) for match in BEAT.findall(output)]
        if not beats:
            raise CheckFailed(f"cycle {cycle}: no beats: {output[-400:]}")
        first = beats[0]
        if last is not None:
            beat, counter, ticks, io, _ = first
            if not (beat >= last[0] and counter > last[1] - (1 << 23) and ticks >= last[2] and io >= last[3]):
                raise CheckFailed(f"cycle {cycle}: the guest did not carry on: {last} then {first}")
        # Every AP alive after the restore: some beat of the cycle saw all of them move.
        if args.cpus > 1 and max(beat[4] for beat in beats) != args.cpus - 1:
            raise CheckFailed(f"cycle {cycle}: only {max(b[4] for b in beats)} of {args.cpus - 1} APs moved: {beats}")
        last = beats[-1]
        if last[2] == 0:
            raise CheckFailed(f"cycle {cycle}: no timer interrupts: {last}")
    restore_ms.sort()
    print(f"snapshot_check: ok: {args.cycles} cycles, {args.cpus} vCPUs, {args.mode}; last beat {last}; "
          f"exec to first beat after restore, median {restore_ms[len(restore_ms) // 2]:.1f} ms", flush=True)


# Every skvm this check started: main() kills those still running when it ends, so a failed
# check never leaves a busy guest on a core (its output goes to a file, not to the test).
started = []


def spawn(command, log):
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    started.append(process)
    return process


def beats_of(path):
    return [tuple(int(x) for x in match) for match in BEAT.findall(open(path, "rb").read())]


def wait_for_beats(path, count, process, timeout=30):
    deadline = time.monotonic() + timeout
    while len(beats_of(path)) < count:
        if process.poll() is not None or time.monotonic() > deadline:
            raise CheckFailed(f"no beats: {open(path, 'rb').read()[-600:]}")
        time.sleep(0.01)
    return beats_of(path)


async def run_job(client, command, arguments):
    statuses = []
    done = asyncio.Event()

    async def collect():
        async for event in client.events:
            if event["event"] == "JOB_STATUS_CHANGE" and event["data"]["id"] == arguments["job-id"]:
                statuses.append(event["data"]["status"])
                if event["data"]["status"] == "concluded":
                    done.set()

    listener = asyncio.create_task(collect())
    await client.execute(command, arguments)
    await asyncio.wait_for(done.wait(), 30)
    listener.cancel()
    jobs = await client.execute("query-jobs")
    job = next(job for job in jobs if job["id"] == arguments["job-id"])
    await client.execute("job-dismiss", {"id": arguments["job-id"]})
    return statuses, job


def check(condition, what):
    if not condition:
        raise CheckFailed(what)
    print(f"  ok: {what}", flush=True)


def savevm(args):
    directory = tempfile.mkdtemp(prefix="skvm-savevm-")
    socket_path = os.path.join(directory, "qmp.sock")
    disk = os.path.join(directory, "disk.qcow2")
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", disk, "1M"], check=True)
    log_path = os.path.join(directory, "console.txt")
    command = [args.skvm, "run", "--qmp", f"unix:{socket_path}", "--flat", args.probe, "--flat-entry", "long",
               "--cpus", str(args.cpus), "--disk", disk]
    with open(log_path, "wb") as log:
        process = spawn(command, log)
        wait_for_beats(log_path, 3, process)

        async def first_session():
            client = QMPClient("savevm")
            await client.connect(socket_path)
            statuses, job = await run_job(client, "snapshot-save",
                                          {"job-id": "save0", "tag": "one", "vmstate": "virtio0", "devices": ["virtio0"]})
            check(statuses == ["created", "running", "waiting", "pending", "concluded"] and "error" not in job,
                  f"snapshot-save job ran through its states ({statuses}, {job})")
            saved_at = beats_of(log_path)[-1]
            wait_for_beats(log_path, len(beats_of(log_path)) + 8, process)
            before_load = beats_of(log_path)[-1]
            count = len(beats_of(log_path))
            statuses, job = await run_job(client, "snapshot-load",
                                          {"job-id": "load0", "tag": "one", "vmstate": "virtio0", "devices": ["virtio0"]})
            check(statuses[-1] == "concluded" and "error" not in job, f"snapshot-load job concluded ({job})")
            # The old machine may print a beat (or half of one, which the restored guest, saved
            # mid-line, then completes) before it stops: among the next beats, one must carry on
            # from the saved machine — at most two beats on (a save mid-line), far below the
            # beat the old machine had reached.
            # On a loaded host the old machine may print several more beats between the count and
            # its stop: wait (up to 30 s) for the restored one's first beat.
            deadline = time.monotonic() + 30
            while True:
                following = beats_of(log_path)[count:]
                resumed = [beat for beat in following if beat[0] <= saved_at[0] + 2 and beat[3] <= saved_at[3] + 8]
                if resumed or time.monotonic() > deadline or process.poll() is not None:
                    break
                await asyncio.sleep(0.01)
            check(resumed and saved_at[0] + 2 < before_load[0],
                  f"snapshot-load went back to the saved machine (saved at {saved_at}, then {before_load}, "
                  f"after load {following})")
            check((await client.execute("query-status"))["status"] == "running", "running after snapshot-load")
            reply = await client.execute("human-monitor-command", {"command-line": "savevm two"})
            check(reply == "", f"HMP savevm two ({reply!r})")
            listing = await client.execute("human-monitor-command", {"command-line": "info snapshots"})
            check("one" in listing and "two" in listing and "MiB" in listing, f"info snapshots ({listing!r})")
            bad = await client.execute("human-monitor-command", {"command-line": "loadvm nothere"})
            check("no snapshot 'nothere'" in bad, f"loadvm of a missing snapshot says so ({bad!r})")
            check((await client.execute("query-status"))["status"] == "running", "and the machine runs on")
            await client.execute("quit")
            try:
                await client.disconnect()
            except EOFError:
                pass

        asyncio.run(first_session())
        process.wait(30)
    listing = subprocess.run(["qemu-img", "snapshot", "-l", disk], capture_output=True, text=True).stdout
    rows = [line.split() for line in listing.splitlines()[2:]]
    check(len(rows) == 2 and all(row[2] != "0" for row in rows), f"qemu-img snapshot -l lists both with a VM size:\n{listing}")
    checked = subprocess.run(["qemu-img", "check", disk], capture_output=True, text=True)
    check(checked.returncode == 0, f"qemu-img check is clean ({checked.stdout.strip()})")

    log_path = os.path.join(directory, "console2.txt")
    with open(log_path, "wb") as log:
        process = spawn(command + ["--loadvm", "two"], log)
        beats = wait_for_beats(log_path, 3, process)
        check(beats[0][0] > 3, f"--loadvm two continues the saved machine (first beat {beats[0]})")
        # --loadvm maps the RAM from the image's clusters: deleting the snapshot that holds them
        # and saving another (which allocates clusters) must not hand them out while mapped.
        deleted = subprocess.run([args.skvm, "monitor", socket_path, "-c", "delvm two", "-c", "savevm three"],
                                 capture_output=True, text=True)
        count = len(beats_of(log_path))
        wait_for_beats(log_path, count + 40, process)
        check(b"FAIL" not in open(log_path, "rb").read(),
              "the guest reads back all its RAM after delvm of the snapshot it came from and a new savevm")
        subprocess.run([args.skvm, "monitor", socket_path, "-c", "quit"], capture_output=True, text=True)
        process.wait(30)
    listing = subprocess.run(["qemu-img", "snapshot", "-l", disk], capture_output=True, text=True).stdout
    check(" one " in listing and " two " not in listing and " three " in listing,
          f"delvm two removed it, savevm three added one ({deleted.stdout!r}):\n{listing}")
    check(subprocess.run(["qemu-img", "check", disk], capture_output=True).returncode == 0, "qemu-img check still clean")
    print("snapshot_check: ok: savevm, snapshot-save/-load jobs, loadvm, --loadvm, delvm", flush=True)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--skvm", required=True)
    parser.add_argument("--probe", required=True)
    parser.add_argument("--cpus", type=int, default=2)
    parser.add_argument("--cycles", type=int, default=5)
    parser.add_argument("--mode", choices=["mapped", "copy"], default="mapped")
    parser.add_argument("--run-seconds", type=float, default=0.15)
    parser.add_argument("--scenario", choices=["cycles", "savevm"], default="cycles")
    args = parser.parse_args()
    try:
        (savevm if args.scenario == "savevm" else run)(args)
    except (CheckFailed, OSError, subprocess.TimeoutExpired) as error:
        print(f"snapshot_check: FAILED: {error}", flush=True)
        return 1
    finally:
        for process in started:
            if process.poll() is None:
                process.kill()
                process.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
