#!/usr/bin/env python3
"""The management daemon's overhead: `skvm ctl start` → the guest's first serial byte through
skvmd against a plain `skvm run` of the same guest, and `skvm ctl list --all` with 200 defined
domains (and the API's own time for each, without the CLI process). Medians of --runs.

  bench/management.py --bin DIR [--runs N] [--domains N]
"""
import argparse
import http.client
import json
import os
import select
import shutil
import socket
import statistics
import subprocess
import tempfile
import time

from results import report

# Real mode: "ok\n" on COM1, then halt with interrupts off (idle until destroyed).
HALT_GUEST = bytes([0xBA, 0xF8, 0x03, 0xB0, 0x6F, 0xEE, 0xB0, 0x6B, 0xEE, 0xB0, 0x0A, 0xEE, 0xFA, 0xF4, 0xEB, 0xFD])


class UnixHTTP(http.client.HTTPConnection):
    def __init__(self, path):
        super().__init__("localhost", timeout=60)
        self.path = path

    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(self.path)


def api(path, method, target, body=b"", content_type="application/json"):
    connection = UnixHTTP(path)
    connection.request(method, target, body=body, headers={"Content-Type": content_type})
    response = connection.getresponse()
    data = response.read()
    connection.close()
    if response.status >= 300:
        raise SystemExit(f"management bench: {method} {target}: {response.status} {data[:300]!r}")
    return data


def plain_run(skvm, guest):
    started = time.monotonic()
    process = subprocess.Popen([skvm, "run", "--flat", guest, "--memory", "32M", "--net", "none",
                                "--console", "serial"], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                               stderr=subprocess.DEVNULL)
    deadline = started + 30
    while time.monotonic() < deadline:
        if select.select([process.stdout], [], [], 1)[0] and os.read(process.stdout.fileno(), 64):
            elapsed = time.monotonic() - started
            break
    else:
        raise SystemExit("management bench: skvm run printed nothing")
    process.kill()
    process.wait()
    return elapsed


def wait_for_output(log, offset, deadline):
    """Polls the domain's log for the guest's first byte after `offset` (skvmd's own lines
    start with 'skvmd:')."""
    while time.monotonic() < deadline:
        try:
            with open(log, "rb") as handle:
                handle.seek(offset)
                for line in handle.read().split(b"\n"):
                    if line and not line.startswith(b"skvmd:"):
                        return time.monotonic()
        except FileNotFoundError:
            pass
        time.sleep(0.0002)
    raise SystemExit("management bench: the domain printed nothing")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--bin", required=True, help="the directory of skvm, skvmd and skvm-ctl")
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--domains", type=int, default=200)
    args = parser.parse_args()
    skvm, skvmd, ctl = (os.path.join(args.bin, name) for name in ("skvm", "skvmd", "skvm-ctl"))
    work = tempfile.mkdtemp(prefix="skvm-mgmt-bench-", dir="/tmp")
    guest = os.path.join(work, "halt.bin")
    with open(guest, "wb") as handle:
        handle.write(HALT_GUEST)
    daemon = subprocess.Popen([skvmd, "--state-dir", f"{work}/state", "--runtime-dir", f"{work}/run", "--skvm", skvm],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    sock = f"{work}/run/skvm-sock"
    try:
        deadline = time.monotonic() + 30
        while not os.path.exists(sock):
            if time.monotonic() > deadline:
                raise SystemExit("management bench: skvmd did not start")
            time.sleep(0.01)
        time.sleep(0.2)
        xml = ("<domain xmlns:skvm='https://swiftkvm.dev/schemas/domain/1.0'><name>bench</name>"
               f"<memory unit='MiB'>32</memory><os><skvm:flat>{guest}</skvm:flat></os></domain>")
        api(sock, "POST", "/v1/domains", xml.encode(), "application/xml")
        log = f"{work}/state/log/bench.log"
        plain, through_ctl, through_api = [], [], []
        for _ in range(args.runs):
            plain.append(plain_run(skvm, guest))
            for samples, use_ctl in ((through_ctl, True), (through_api, False)):
                offset = os.path.getsize(log) if os.path.exists(log) else 0
                started = time.monotonic()
                if use_ctl:
                    subprocess.Popen([ctl, "-c", sock, "start", "bench"], stdout=subprocess.DEVNULL)
                else:
                    api(sock, "POST", "/v1/domains/bench/start")
                samples.append(wait_for_output(log, offset, started + 30) - started)
                while True:
                    try:
                        api(sock, "POST", "/v1/domains/bench/destroy")
                        break
                    except SystemExit:
                        time.sleep(0.01)
        for index in range(args.domains):
            xml = ("<domain xmlns:skvm='https://swiftkvm.dev/schemas/domain/1.0'>"
                   f"<name>d{index:03}</name><title>Domain {index}</title><memory unit='MiB'>32</memory>"
                   f"<os><skvm:flat>{guest}</skvm:flat></os></domain>")
            api(sock, "POST", "/v1/domains", xml.encode(), "application/xml")
        list_ctl, list_api = [], []
        for _ in range(args.runs):
            started = time.monotonic()
            output = subprocess.run([ctl, "-c", sock, "list", "--all"], capture_output=True, check=True).stdout
            list_ctl.append(time.monotonic() - started)
            assert output.count(b"shut off") >= args.domains, output[:400]
            started = time.monotonic()
            api(sock, "GET", "/v1/domains")
            list_api.append(time.monotonic() - started)
    finally:
        daemon.terminate()
        daemon.wait()
        subprocess.run(["pkill", "-9", "-f", work])
        shutil.rmtree(work, ignore_errors=True)

    ms = lambda values: statistics.median(values) * 1000
    print(f"\n== management: medians of {args.runs} runs (ms)")
    print(f"{'measure':58} {'skvm':>9}")
    rows = [
        ("skvm run → first serial byte", ms(plain)),
        ("skvm ctl start → first serial byte (through skvmd)", ms(through_ctl)),
        ("API start → first serial byte (through skvmd)", ms(through_api)),
        (f"skvm ctl list --all, {args.domains} domains", ms(list_ctl)),
        (f"API GET /v1/domains, {args.domains} domains", ms(list_api)),
    ]
    for name, value in rows:
        print(f"{name:58} {value:9.1f}")
    overhead = ms(through_ctl) - ms(plain)
    print(f"{'daemon overhead (ctl start − skvm run)':58} {overhead:9.1f}")
    report("daemon start overhead over skvm run", "ms", overhead, {}, value_goal=20,
           note=f"skvm ctl start {ms(through_ctl):.1f} ms vs skvm run {ms(plain):.1f} ms")
    report(f"skvm ctl list --all, {args.domains} domains", "ms", ms(list_ctl), {}, value_goal=20)


if __name__ == "__main__":
    main()
