#!/usr/bin/env python3
"""The host side of the virtio_net probe (Probes/probes/virtio_net.c): a tap in the network
namespace this runs in (run it as root under `unshare -n`), skvm running the probe on it, and
a packet socket on the tap that checks and sends frames as the probe announces each phase.

    probe_peer.py --skvm PATH --probe BINARY [--vhost] [--queues N]

Prints the probe's console and one "host: PASS|FAIL what" line per check; exits 0 when the
probe passed (skvm's status 1: debug-exit value 0) and every host check held.
"""
import argparse
import queue
import socket
import subprocess
import sys
import threading
import time

TAP = "skvmprobe0"
ETHERTYPE = 0x88B5
OUTGOING = 4  # PACKET_OUTGOING: our own frames, seen by the socket too
failures = []


def check(ok, what):
    print(f"host: {'PASS' if ok else 'FAIL'} {what}", flush=True)
    if not ok:
        failures.append(what)


def pattern(number, length):
    return bytes((i * 7 + number) & 0xFF for i in range(18, length))


def frame(destination, source, number, length):
    return destination + source + ETHERTYPE.to_bytes(2, "big") + number.to_bytes(4, "little") + pattern(number, length)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--skvm", required=True)
    parser.add_argument("--probe", required=True)
    parser.add_argument("--vhost", action="store_true")
    parser.add_argument("--queues", type=int, default=1)
    arguments = parser.parse_args()
    multiqueue = ["multi_queue"] if arguments.queues > 1 else []
    for command in (["ip", "link", "set", "lo", "up"], ["ip", "tuntap", "add", TAP, "mode", "tap"] + multiqueue,
                    ["ip", "link", "set", TAP, "mtu", "9000", "up"]):
        subprocess.run(command, check=True)
    packets = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETHERTYPE))
    packets.bind((TAP, 0))
    packets.settimeout(30)
    net = f"tap,ifname={TAP}" + (",vhost=on" if arguments.vhost else "")
    if arguments.queues > 1:
        net += f",queues={arguments.queues}"
    skvm = subprocess.Popen([arguments.skvm, "run", "--flat", arguments.probe, "--flat-entry", "long", "--memory",
                             "64M", "--net", net, "--stats"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    lines = queue.Queue()

    def read():
        for line in skvm.stdout:
            text = line.decode(errors="replace")
            print(text, end="", flush=True)
            lines.put(text)
        lines.put(None)

    threading.Thread(target=read, daemon=True).start()

    def wait_for(text, timeout=60):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = lines.get(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                break
            if line is None:
                break
            if text in line:
                return True
        check(False, f"the probe said {text!r}")
        return False

    def receive():
        while True:
            data, address = packets.recvfrom(65536)
            if address[2] != OUTGOING:
                return data

    mine = bytes.fromhex("020000000001")
    if wait_for("PHASE transmit"):
        good = 0
        probe_mac = None
        for number in range(64):
            data = receive()
            probe_mac = probe_mac or data[6:12]
            length = 60 + (number * 97) % 1455
            good += data == frame(b"\xff" * 6, probe_mac, number, length)
        check(good == 64, f"64 frames from the probe, byte-exact and in order ({good})")
        if wait_for("PHASE burst"):
            for number in range(1000):
                packets.send(frame(probe_mac, mine, number, 60 + (number * 97) % 1455))
            if wait_for("PHASE mergeable"):
                packets.send(frame(probe_mac, mine, 5000, 5000))
                if wait_for("PHASE filter"):
                    packets.send(frame(bytes.fromhex("525400999999"), mine, 6666, 100))
                    packets.send(frame(probe_mac, mine, 7777, 100))
                    if wait_for("PHASE hostile"):
                        data = receive()
                        check(data == frame(b"\xff" * 6, probe_mac, 9000, 60 + (9000 * 97) % 1455),
                              "a frame from the probe after its reset")
    try:
        status = skvm.wait(timeout=60)
    except subprocess.TimeoutExpired:
        skvm.kill()
        status = None
    check(status == 1, f"the probe passed (skvm exit status {status}, 1 expected)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
