#!/usr/bin/env python3
"""Networking in the default guest, skvm against QEMU q35 with virtio-net-pci (vhost off and
on; skvm with and without vhost too) on the same KVM, kernel, initramfs and tap, and user
networking (libslirp) for both.

Runs as root in a network namespace of its own (run-linux-net wraps it in `unshare -n`): a tap
`skvmbench0` with 192.168.99.1/24 on the host side; the guest gets 192.168.99.2 (tap) or its
DHCP lease (user). Per VMM: ping round trips to the host (200, 10 ms apart; the median of
the per-run averages) and iperf3 TCP throughput guest→host and host→guest (`-R`), the guest's
iperf3 client against the host's server (the initramfs is the default guest's with iperf3
added: `skvm kit --add iperf3`; for user networking the host is 10.0.2.2).

    linux_net.py --kernel K --initrd I --skvm PATH [--runs N] [--seconds S] [--only NAME,...]
"""
import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import time

from guest_console import Guest
from results import report

COMMAND_LINE = "console=ttyS0 quiet panic=-1"
TAP = "skvmbench0"
HOST, GUEST = "192.168.99.1", "192.168.99.2"
IPERF_PORT, GUEST_PORT, FORWARD_PORT = 5201, 5001, 15001


def commands(arguments):
    qemu = shutil.which("qemu-system-x86_64")
    q35 = [qemu, "-M", "q35", "-enable-kvm", "-cpu", "host", "-m", "256", "-smp", "1", "-nodefaults",
           "-no-user-config", "-display", "none", "-serial", "stdio", "-monitor", "none", "-no-reboot",
           "-kernel", arguments.kernel, "-initrd", arguments.initrd, "-append", COMMAND_LINE]
    skvm = [arguments.skvm, "run", "--kernel", arguments.kernel, "--initrd", arguments.initrd,
            "--cmdline", COMMAND_LINE, "--memory", "256M"]
    tap = f"tap,id=n0,ifname={TAP},script=no,downscript=no"
    user = f"user,id=n0,hostfwd=tcp:127.0.0.1:{FORWARD_PORT}-:{GUEST_PORT}"
    return {
        "skvm-tap": ("tap", skvm + ["--net", f"tap,ifname={TAP}"]),
        "skvm-vhost": ("tap", skvm + ["--net", f"tap,ifname={TAP},vhost=on"]),
        "qemu-tap": ("tap", q35 + ["-netdev", tap + ",vhost=off", "-device", "virtio-net-pci,netdev=n0"]),
        "qemu-vhost": ("tap", q35 + ["-netdev", tap + ",vhost=on", "-device", "virtio-net-pci,netdev=n0"]),
        "skvm-user": ("user", skvm + ["--net", f"user,hostfwd=tcp::{FORWARD_PORT}-:{GUEST_PORT}"]),
        "qemu-user": ("user", q35 + ["-netdev", user, "-device", "virtio-net-pci,netdev=n0"]),
    }


def iperf(guest, host, step, seconds, reverse):
    """The guest's iperf3 client against the host's server: the receiver's rate in MiB/s."""
    _, output = guest.run(f"iperf3 -c {host} -p {IPERF_PORT} -t {seconds} -f m{' -R' if reverse else ''}"
                          " | grep receiver", step, timeout=seconds + 120)
    match = re.search(rb"([\d.]+) Mbits/sec\s+receiver", output)
    return float(match.group(1)) * 1e6 / 8 / 2**20 if match else None


def run_once(mode, command, seconds):
    guest = Guest(command)
    try:
        guest.wait_for(b"SKVM-GUEST-READY")
        host = HOST if mode == "tap" else "10.0.2.2"
        step = 0
        if mode == "tap":
            guest.run(f"ip addr add {GUEST}/24 dev eth0", step)
            step += 1
        _, output = guest.run(f"ping -c 200 -i 0.01 -q {host} | tail -n 1", step)
        step += 1
        match = re.search(rb"min/avg/max = [\d.]+/([\d.]+)/", output)
        latency = float(match.group(1)) * 1000 if match else None
        transmit = iperf(guest, host, step, seconds, reverse=False)
        receive = iperf(guest, host, step + 1, seconds, reverse=True)
        return {"ping-us": latency, "guest-to-host": transmit, "host-to-guest": receive}
    finally:
        guest.close()


def main():
    parser = argparse.ArgumentParser()
    for option in ("--kernel", "--initrd", "--skvm"):
        parser.add_argument(option, required=True)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=4)
    parser.add_argument("--only", help="comma-separated VMM names (skvm-user,qemu-user, …); default: all")
    arguments = parser.parse_args()
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    subprocess.run(["ip", "tuntap", "add", TAP, "mode", "tap"], check=True)
    subprocess.run(["ip", "addr", "add", f"{HOST}/24", "dev", TAP], check=True)
    subprocess.run(["ip", "link", "set", TAP, "up"], check=True)
    # One iperf3 server for every run: the tap's address and loopback (user networking's 10.0.2.2).
    server = subprocess.Popen(["iperf3", "-s", "-p", str(IPERF_PORT)], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    time.sleep(0.5)
    vmms = commands(arguments)
    if arguments.only:
        vmms = {name: vmms[name] for name in arguments.only.split(",") if name in vmms}
    if not os.path.exists("/dev/vhost-net"):
        print("no /dev/vhost-net: vhost=on is left out", file=sys.stderr)
        vmms.pop("qemu-vhost", None)
        vmms.pop("skvm-vhost", None)
    samples = {name: [] for name in vmms}
    for run in range(arguments.runs):
        for name, (mode, command) in vmms.items():
            try:
                samples[name].append(run_once(mode, command, arguments.seconds))
            except Exception as error:  # one failed boot is a missing sample, not a lost bench
                print(f"  {name} run {run + 1} failed: {error}", file=sys.stderr, flush=True)
                continue
            print(f"  {name} run {run + 1}: {samples[name][-1]}", file=sys.stderr, flush=True)

    def median(name, key):
        values = [s[key] for s in samples[name] if s.get(key)]
        return statistics.median(values) if values else None

    server.kill()
    print(f"\nnetworking in the default guest, medians of {arguments.runs} (iperf3, {arguments.seconds} s each way)\n")
    print(f"{'vmm':<12}{'ping µs':>10}{'guest→host MiB/s':>18}{'host→guest MiB/s':>18}")
    for name in vmms:
        cells = [median(name, key) for key in ("ping-us", "guest-to-host", "host-to-guest")]
        print(f"{name:<12}" + "".join(f"{'—' if v is None else f'{v:.1f}':>{w}}" for v, w in zip(cells, (10, 18, 18))))
    # skvm's best configuration for the job against QEMU's: the tap with and without vhost.
    for backend in ("tap", "vhost", "user"):
        mine = f"skvm-{backend}"
        if mine not in vmms:
            continue
        mode = "user" if backend == "user" else "tap"
        peers = [name for name in vmms if name.startswith("qemu") and vmms[name][0] == mode]
        report(f"net {backend}: ping round trip", "µs", median(mine, "ping-us"),
               {name: median(name, "ping-us") for name in peers}, better="lower", ratio_goal=1.0)
        for key, label in (("guest-to-host", "iperf3 guest→host"), ("host-to-guest", "iperf3 host→guest")):
            report(f"net {backend}: {label}", "MiB/s", median(mine, key),
                   {name: median(name, key) for name in peers}, better="higher", ratio_goal=1.0)


if __name__ == "__main__":
    main()
