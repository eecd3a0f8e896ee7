#!/usr/bin/env python3
"""Firmware boot of an ISO and of an installed disk under skvm and QEMU 7.2 with the same SeaBIOS,
on this machine's KVM.

The ISO (grub-mkrescue: GRUB on the serial console, timeout 0) carries the default guest's
kernel and initramfs. For each VMM: from spawn to the boot loader's first line (GRUB's echo
before it loads the kernel) and to SKVM-GUEST-READY (the shell), then `poweroff -f`.
skvm boots the ISO from its CD-ROM drive (virtio-scsi) and as a disk (virtio-blk); QEMU
from its CD-ROM on q35 (AHCI) and pc (IDE).

With --installed IMAGE (scripts/debian-disk: an installed Debian, GRUB in the MBR, systemd):
from spawn to GRUB's menu ("GNU GRUB") and to the login prompt, each VMM on a fresh overlay of
the image, virtio-blk for all (what an installed guest would be given). Prints medians and ratios.

    firmware_boot.py --kernel K --initrd I --skvm PATH [--installed IMAGE] [--runs N] [--boot-timeout S]
"""
import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile

from linux_boot import boot_once
from results import report

BIOS = "/usr/share/seabios/bios-256k.bin"
LOADER_LINE = b"GRUB-LOADS-THE-KERNEL"
MENU_LINE = b"GNU GRUB"
LOGIN = b"login:"


def make_iso(kernel, initrd, directory):
    root = os.path.join(directory, "iso")
    os.makedirs(os.path.join(root, "boot", "grub"))
    shutil.copy(kernel, os.path.join(root, "boot", "vmlinuz"))
    shutil.copy(initrd, os.path.join(root, "boot", "initrd.gz"))
    with open(os.path.join(root, "boot", "grub", "grub.cfg"), "w") as menu:
        menu.write("serial --unit=0 --speed=115200\nterminal_input serial\nterminal_output serial\n"
                   "set timeout=0\nmenuentry \"skvm default guest\" {\n  echo \"GRUB-LOADS-THE-KERNEL\"\n"
                   "  linux /boot/vmlinuz console=ttyS0 quiet panic=-1\n  initrd /boot/initrd.gz\n}\n")
    path = os.path.join(directory, "guest.iso")
    subprocess.run(["grub-mkrescue", "-o", path, root], check=True, capture_output=True)
    return path


def commands(arguments, iso):
    qemu = shutil.which("qemu-system-x86_64")

    def qemu_command(machine):
        return [qemu, "-M", f"{machine},graphics=off", "-enable-kvm", "-cpu", "host", "-m", "256", "-smp", "1",
                "-nodefaults", "-no-user-config", "-display", "none", "-serial", "stdio", "-monitor", "none",
                "-bios", BIOS, "-cdrom", iso, "-boot", "d", "-no-reboot"]

    skvm = [arguments.skvm, "run", "--memory", "256M", "--net", "none", "--bios", BIOS]
    return {
        "skvm-cdrom": skvm + ["--cdrom", iso, "--boot", "order=d"],
        "skvm-disk": skvm + ["--disk", f"{iso},readonly=on", "--boot", "order=c"],
        "qemu-q35": qemu_command("q35"),
        "qemu-pc": qemu_command("pc"),
    }


def installed_commands(arguments, overlay):
    """The installed disk, as a virtio-blk disk under each VMM (512 MiB: systemd wants more than 256)."""
    qemu = shutil.which("qemu-system-x86_64")

    def qemu_command(machine):
        return [qemu, "-M", f"{machine},graphics=off", "-enable-kvm", "-cpu", "host", "-m", "512", "-smp", "1",
                "-nodefaults", "-no-user-config", "-display", "none", "-serial", "stdio", "-monitor", "none",
                "-bios", BIOS, "-drive", f"file={overlay},if=virtio,format=qcow2", "-no-reboot"]

    return {
        "skvm-installed": [arguments.skvm, "run", "--memory", "512M", "--net", "none", "--bios", BIOS,
                           "--disk", overlay, "--boot", "order=c"],
        "qemu-q35-installed": qemu_command("q35"),
        "qemu-pc-installed": qemu_command("pc"),
    }


def measure(table, runs, boot_timeout, first_marker, ready_marker, on_ready, before_each=lambda: None):
    """Boots each command of `table` (name → command) `runs` times, interleaved so that drift in
    the host hits every VMM alike. Returns medians by name and the count of failed boots."""
    samples = {name: [] for name in table}
    troubles = {name: 0 for name in table}
    for run in range(runs):
        for name, command in table.items():
            before_each()
            try:
                boot = boot_once(command, boot_timeout, first_marker=first_marker, ready_marker=ready_marker,
                                 on_ready=on_ready)
                samples[name].append({"loader_ms": boot["first_line_ms"], "ready_ms": boot["ready_ms"]})
                print(f"  {name} boot {run + 1}: boot loader after {samples[name][-1]['loader_ms']:.0f} ms, "
                      f"{ready_marker.decode()} after {samples[name][-1]['ready_ms']:.0f} ms",
                      file=sys.stderr, flush=True)
            except RuntimeError as error:
                troubles[name] += 1
                print(f"  {name} boot {run + 1}: FAILED: {error}", file=sys.stderr, flush=True)
                # A boot that reached its boot loader but not the ready line still counts for
                # the boot loader (the goal's measure); its ready time is missing.
                loader = getattr(error, "first_line_ms", None)
                if loader is not None:
                    samples[name].append({"loader_ms": loader, "ready_ms": None})

    def median(values):
        present = [value for value in values if value is not None]
        return statistics.median(present) if present else None

    results = {name: {key: median(s[key] for s in runs) for key in runs[0]}
               for name, runs in samples.items() if runs}
    return results, troubles


def print_table(title, results, troubles, ready_label, pairs):
    print(f"\n{title}\n")
    print(f"{'':<20}{'boot loader':>14}{ready_label:>12}{'failed':>8}")
    for name in troubles:
        r = results.get(name)
        ready = f"{r['ready_ms']:>9.0f} ms" if r and r["ready_ms"] is not None else f"{'never':>12}"
        figures = f"{r['loader_ms']:>11.0f} ms{ready}" if r else f"{'no boot finished':>26}"
        print(f"{name:<20}{figures}{troubles[name]:>8}")
    print()
    for ours, peer in pairs:
        mine, r = results.get(ours), results.get(peer)
        if mine and r:
            ready = (f"{mine['ready_ms'] / r['ready_ms']:.2f}×" if mine["ready_ms"] and r["ready_ms"]
                     else f"— ({peer} never reached it)" if mine["ready_ms"] else "—")
            print(f"{ours} / {peer}: boot loader {mine['loader_ms'] / r['loader_ms']:.2f}×, {ready_label} {ready}")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--kernel", required=True)
    parser.add_argument("--initrd", required=True)
    parser.add_argument("--skvm", required=True)
    parser.add_argument("--installed", help="an installed system's disk image (scripts/debian-disk)")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--boot-timeout", type=float, default=240)
    arguments = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory:
        iso = make_iso(arguments.kernel, arguments.initrd, directory)
        results, troubles = measure(commands(arguments, iso), arguments.runs, arguments.boot_timeout,
                                    LOADER_LINE, b"SKVM-GUEST-READY", b"poweroff -f\n")
        installed, installed_troubles = {}, {}
        if arguments.installed:
            overlay = os.path.join(directory, "installed.qcow2")

            def fresh_overlay():
                if os.path.exists(overlay):
                    os.remove(overlay)
                subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", arguments.installed, "-F", "qcow2",
                                overlay], check=True)

            installed, installed_troubles = measure(
                installed_commands(arguments, overlay), arguments.runs, arguments.boot_timeout, MENU_LINE, LOGIN,
                None, before_each=fresh_overlay)
    print_table(f"Firmware boot of a GRUB ISO (SeaBIOS {BIOS}), medians of {arguments.runs}", results, troubles,
                "shell", [(ours, peer) for ours in ("skvm-cdrom", "skvm-disk") for peer in ("qemu-q35", "qemu-pc")])
    if arguments.installed:
        print_table(f"Firmware boot of an installed Debian ({arguments.installed}): GRUB's menu, then the login "
                    f"prompt, medians of {arguments.runs}", installed, installed_troubles, "login",
                    [("skvm-installed", "qemu-q35-installed"), ("skvm-installed", "qemu-pc-installed")])
    mine = results.get("skvm-cdrom")
    report("firmware boot to the boot loader (ISO on CD-ROM)", "ms", mine["loader_ms"] if mine else None,
           {peer: results[peer]["loader_ms"] for peer in ("qemu-q35", "qemu-pc") if peer in results}, ratio_goal=0.8)
    if arguments.installed:
        mine = installed.get("skvm-installed")
        report("firmware boot to the boot loader (installed disk)", "ms", mine["loader_ms"] if mine else None,
               {peer.removesuffix("-installed"): installed[peer]["loader_ms"]
                for peer in ("qemu-q35-installed", "qemu-pc-installed") if peer in installed}, ratio_goal=0.8)


if __name__ == "__main__":
    main()
