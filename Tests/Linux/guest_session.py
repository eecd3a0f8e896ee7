#!/usr/bin/env python3
"""Drives a guest console like a person at a terminal: starts a command (skvm run ...),
waits for text to appear, types lines, and reports what happened.

    guest_session.py [--timeout S] [--name NAME] STEP... -- COMMAND...

Steps run in order:
    expect:TEXT     wait until TEXT has appeared in the output (since the last expect)
    send:LINE       type LINE and Enter
    exit:STATUS     wait for COMMAND to end and check its status (any status if omitted)
    qmp:COMMAND [JSON]  run a QMP command, with JSON arguments if given (with --qmp-socket;
                    needs PyPI qemu.qmp); its reply joins the transcript
    qmp-event:NAME  wait for the QMP event NAME
    hmp:LINE        run a human-monitor command over QMP; its reply joins the transcript
    hmp-until:TEXT|LINE  run LINE every 0.2 s until its reply contains TEXT (within the timeout)
    sleep:SECONDS   wait, reading the console meanwhile
    run:COMMAND     while the guest runs: run COMMAND in a shell where skvm runs (reading the
                    console meanwhile) and add its output to the transcript, for expect: to check
    host:COMMAND    after exit: run COMMAND in a shell where skvm runs (in the lane, inside
                    it) and add its output to the transcript, for expect: to check

Prints "=== session NAME" first, then the console transcript, then one line
"=== result NAME ok|failed: reason". Exit status: 0 when every step held, 1 otherwise.
"""
import json
import os
import select
import subprocess
import sys
import time


def main():
    arguments = sys.argv[1:]
    timeout, name, qmp_socket = 60.0, "session", None
    while arguments and arguments[0].startswith("--") and arguments[0] != "--":
        option = arguments.pop(0)
        if option == "--timeout":
            timeout = float(arguments.pop(0))
        elif option == "--name":
            name = arguments.pop(0)
        elif option == "--qmp-socket":
            qmp_socket = arguments.pop(0)
        else:
            raise SystemExit(f"unknown option {option}")
    split = arguments.index("--")
    steps, command = arguments[:split], arguments[split + 1:]
    print(f"=== session {name}", flush=True)
    started = time.monotonic()
    process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    transcript = b""
    position = 0
    verdict = "ok"
    monitor = None

    def qmp():
        nonlocal monitor
        if monitor is None:
            from qemu.qmp.legacy import QEMUMonitorProtocol
            while not os.path.exists(qmp_socket):
                time.sleep(0.05)
            monitor = QEMUMonitorProtocol(qmp_socket)
            monitor.connect(negotiate=True)
        return monitor

    def pump(wait):
        nonlocal transcript
        ready, _, _ = select.select([process.stdout], [], [], wait)
        if not ready:
            return True
        chunk = os.read(process.stdout.fileno(), 65536)
        if not chunk:
            return False
        transcript += chunk
        sys.stdout.write(chunk.decode(errors="replace"))
        sys.stdout.flush()
        return True

    for step in steps:
        kind, _, value = step.partition(":")
        deadline = started + timeout
        if kind == "expect":
            needle = value.encode()
            while needle not in transcript[position:]:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not pump(min(remaining, 0.5)) and process.poll() is not None:
                    verdict = f"failed: {value!r} did not appear within {timeout:.0f} s"
                    break
            else:
                position = transcript.index(needle, position) + len(needle)
                continue
            break
        elif kind == "send":
            process.stdin.write(value.encode() + b"\n")
            process.stdin.flush()
        elif kind == "qmp":
            command, _, arguments = value.partition(" ")
            reply = qmp().cmd(command, json.loads(arguments) if arguments else None)
            transcript += b"\n[qmp] " + json.dumps(reply).encode() + b"\n"
            print(f"\n[qmp] {value} -> {reply}", flush=True)
            if "return" not in reply:
                verdict = f"failed: QMP {value} answered {reply}"
                break
        elif kind == "hmp":
            reply = qmp().cmd("human-monitor-command", {"command-line": value})
            text = reply.get("return", str(reply))
            transcript += b"\n[hmp] " + text.encode() + b"\n"
            print(f"\n[hmp] {value} -> {text!r}", flush=True)
            if "return" not in reply:
                verdict = f"failed: HMP {value} answered {reply}"
                break
        elif kind == "hmp-until":
            wanted, _, line = value.partition("|")
            text = ""
            while wanted not in text and time.monotonic() < deadline:
                pump(0.2)
                text = qmp().cmd("human-monitor-command", {"command-line": line}).get("return", "")
            print(f"\n[hmp] {line} -> {text!r}", flush=True)
            if wanted not in text:
                verdict = f"failed: {line} never answered {wanted!r}"
                break
        elif kind == "sleep":
            until = time.monotonic() + float(value)
            while time.monotonic() < until:
                pump(max(0.0, min(0.1, until - time.monotonic())))
        elif kind == "qmp-event":
            event = None
            while event is None and time.monotonic() < deadline:
                pump(0.05)
                event = qmp().pull_event(wait=False)
                if event is not None and event["event"] != value:
                    print(f"\n[qmp] event {event['event']} (waiting for {value})", flush=True)
                    event = None
            if event is None:
                verdict = f"failed: no QMP event {value} within {timeout:.0f} s"
                break
            print(f"\n[qmp] event {value}: {event.get('data', {})}", flush=True)
        elif kind == "exit":
            while process.poll() is None and time.monotonic() < deadline:
                pump(0.5)
            while pump(0):
                if process.poll() is not None and not select.select([process.stdout], [], [], 0)[0]:
                    break
            if process.poll() is None:
                verdict = f"failed: still running after {timeout:.0f} s"
                break
            if value and process.returncode != int(value):
                verdict = f"failed: exit status {process.returncode}, expected {value}"
                break
        elif kind == "run":
            helper = subprocess.Popen(value, shell=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
            while helper.poll() is None and time.monotonic() < deadline:
                pump(0.05)
            if helper.poll() is None:
                helper.kill()
                verdict = f"failed: run:{value} did not finish within {timeout:.0f} s"
                break
            output = helper.stdout.read()
            transcript += b"\n[run] " + output + b"\n"
            sys.stdout.write("\n[run] " + output.decode(errors="replace") + "\n")
        elif kind == "host":
            output = subprocess.run(value, shell=True, capture_output=True).stdout
            transcript += b"\n[host] " + output + b"\n"
            sys.stdout.write("\n[host] " + output.decode(errors="replace") + "\n")
        else:
            raise SystemExit(f"unknown step {step}")
    if verdict != "ok" and monitor is not None and process.poll() is None:
        # Where the machine was when the session gave up: a slow boot and a stuck vCPU look alike.
        for line in ("info status", "info registers"):
            try:
                reply = monitor.cmd("human-monitor-command", {"command-line": line})
                print(f"\n[hmp at failure] {line} -> {reply.get('return', reply)}", flush=True)
            except Exception as error:  # noqa: BLE001 — a diagnostic only
                print(f"\n[hmp at failure] {line} failed: {error}", flush=True)
    if process.poll() is None:
        process.kill()
        process.wait()
    elapsed = time.monotonic() - started
    print(f"\n=== result {name} {verdict} (status {process.returncode}, {elapsed:.1f} s)", flush=True)
    sys.exit(0 if verdict == "ok" else 1)


if __name__ == "__main__":
    main()
