#!/usr/bin/env python3
"""The real-KVM test lane: runs commands inside a QEMU TCG virtual machine whose
kernel loads kvm_amd on QEMU's emulated AMD SVM, so SwiftKVM meets an ordinary
(non-PVM) KVM even on hosts whose own KVM cannot run a stock Linux.

The outer VM runs Debian's generic kernel (it has 9p) with a small busybox
initramfs; the host's root is shared read-only over 9p and each command runs
chrooted into it, from the current directory, so the freshly built skvm, its
libraries and test inputs are simply there. Several commands share one boot.

    scripts/lane [--timeout S] [--boot-timeout S] -- COMMAND...     one command
    scripts/lane --commands FILE                                      one command per line

Prints the commands' output as it arrives and exits with the status of the
last command (any failing command makes the lane fail when several are given).
"""
import argparse
import gzip
import hashlib
import os
import re
import select
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
KERNEL_METAPACKAGE = "linux-image-amd64"
# Loaded in this order; dependencies are resolved with modinfo and put first.
WANTED_MODULES = ["virtio_pci", "9pnet_virtio", "9p", "overlay", "irqbypass", "kvm", "kvm-amd"]


def log(message):
    print(f"lane: {message}", file=sys.stderr, flush=True)


def cache_root():
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "skvm", "lane")


def run(command, **options):
    return subprocess.run(command, check=True, text=True, capture_output=True, **options).stdout


def candidate_version(package):
    for attempt in range(2):
        policy = run(["apt-cache", "policy", package])
        match = re.search(r"Candidate:\s*(\S+)", policy)
        if match and match.group(1) != "(none)":
            return match.group(1)
        if attempt == 0 and os.geteuid() == 0:
            log("apt has no package lists yet: running apt-get update")
            subprocess.run(["apt-get", "update", "-qq"], check=False)
    raise SystemExit(f"lane: apt knows no candidate for {package}; run 'apt-get update'")


def kernel_package():
    depends = run(["apt-cache", "depends", KERNEL_METAPACKAGE])
    match = re.search(r"Depends:\s*(linux-image-\S+)", depends)
    if not match:
        raise SystemExit(f"lane: cannot tell which kernel {KERNEL_METAPACKAGE} depends on")
    return match.group(1)


def download(package, directory):
    """apt-get download, into directory; returns the .deb path."""
    subprocess.run(["apt-get", "download", "-q", package], cwd=directory, check=True, capture_output=True)
    debs = [name for name in os.listdir(directory) if name.startswith(package.split(":")[0] + "_")]
    if not debs:
        raise SystemExit(f"lane: apt-get download {package} produced no .deb")
    return os.path.join(directory, sorted(debs)[-1])


def module_dependencies(path):
    """The depends= field of a module's .modinfo section (no modinfo binary needed)."""
    data = open(path, "rb").read()
    match = re.search(rb"(?:^|\0)depends=([^\0]*)\0", data)
    return [name for name in (match.group(1).decode().split(",") if match else []) if name]


def module_order(module_directory):
    """WANTED_MODULES with their dependencies first, as paths relative to module_directory."""
    paths = {}
    for root, _, files in os.walk(module_directory):
        for name in files:
            if name.endswith(".ko"):
                paths[name[:-3].replace("_", "-")] = os.path.relpath(os.path.join(root, name), module_directory)
    order = []

    def visit(name):
        key = name.replace("_", "-")
        if key not in paths:
            raise SystemExit(f"lane: module {name} is not in the kernel package")
        if paths[key] in order:
            return
        for dependency in module_dependencies(os.path.join(module_directory, paths[key])):
            visit(dependency)
        order.append(paths[key])

    for module in WANTED_MODULES:
        visit(module)
    return order


class Cpio:
    """A newc cpio archive writer (the initramfs format)."""

    def __init__(self):
        self.data = bytearray()
        self.inode = 1

    def _entry(self, name, mode, content=b"", target=None):
        body = target.encode() if target is not None else content
        header = "070701" + "".join(
            f"{value:08x}"
            for value in [self.inode, mode, 0, 0, 1, 0, len(body), 0, 0, 0, 0, len(name) + 1, 0]
        )
        self.inode += 1
        self.data += header.encode() + name.encode() + b"\0"
        self.data += b"\0" * (-len(self.data) % 4)
        self.data += body
        self.data += b"\0" * (-len(self.data) % 4)

    def directory(self, name):
        self._entry(name, 0o040755)

    def file(self, name, content, executable=False):
        self._entry(name, 0o100755 if executable else 0o100644, content)

    def finish(self):
        self._entry("TRAILER!!!", 0)
        self.data += b"\0" * (-len(self.data) % 512)
        return bytes(self.data)


def prepare_kit():
    """The outer VM's kernel and base initramfs, cached by package versions and init script."""
    kernel = kernel_package()
    key_text = "|".join([kernel, candidate_version(kernel), candidate_version("busybox-static"),
                         open(os.path.join(HERE, "init.sh"), "rb").read().hex(), " ".join(WANTED_MODULES)])
    key = hashlib.sha256(key_text.encode()).hexdigest()[:16]
    directory = os.path.join(cache_root(), key)
    vmlinuz = os.path.join(directory, "vmlinuz")
    initramfs = os.path.join(directory, "base.cpio.gz")
    if os.path.exists(vmlinuz) and os.path.exists(initramfs):
        return vmlinuz, initramfs
    log(f"building the lane kit ({kernel}, busybox-static) in {directory}")
    os.makedirs(directory, exist_ok=True)
    with tempfile.TemporaryDirectory() as work:
        kernel_deb = download(kernel, work)
        busybox_deb = download("busybox-static", work)
        tree = os.path.join(work, "tree")
        for deb in (kernel_deb, busybox_deb):
            subprocess.run(["dpkg-deb", "-x", deb, tree], check=True)
        boot = os.path.join(tree, "boot")
        image = [name for name in os.listdir(boot) if name.startswith("vmlinuz-")][0]
        release = image[len("vmlinuz-"):]
        module_directory = os.path.join(tree, "lib", "modules", release)
        order = module_order(module_directory)
        archive = Cpio()
        for name in ["bin", "sbin", "dev", "proc", "sys", "lib", "lib/modules", "host"]:
            archive.directory(name)
        archive.file("bin/busybox", open(os.path.join(tree, "bin", "busybox"), "rb").read(), executable=True)
        archive.file("init", open(os.path.join(HERE, "init.sh"), "rb").read(), executable=True)
        made = set()
        for module in order:
            parent = os.path.dirname(module)
            parts = parent.split("/")
            for depth in range(1, len(parts) + 1):
                path = "/".join(parts[:depth])
                if path not in made:
                    archive.directory("lib/modules/" + path)
                    made.add(path)
            archive.file("lib/modules/" + module, open(os.path.join(module_directory, module), "rb").read())
        archive.file("modules.order", ("\n".join(order) + "\n").encode())
        with open(initramfs + ".tmp", "wb") as output:
            output.write(gzip.compress(archive.finish(), 6))
        shutil.copy(os.path.join(boot, image), vmlinuz + ".tmp")
        os.replace(vmlinuz + ".tmp", vmlinuz)
        os.replace(initramfs + ".tmp", initramfs)
    return vmlinuz, initramfs


def job_archive(commands, cwd, timeout, interactive=False):
    archive = Cpio()
    if interactive:
        archive.file("job.interactive", b"")
    archive.file("job", ("\n".join(commands) + "\n").encode())
    archive.file("job.cwd", cwd.encode())
    archive.file("job.timeout", str(int(timeout)).encode())
    return archive.finish()


def boot_and_run(vmlinuz, initrd, commands, boot_timeout, command_timeout, verbose=False, interactive=False):
    """One outer boot. Returns (statuses by command, finished cleanly, a reason if not)."""
    qemu = shutil.which("qemu-system-x86_64")
    if not qemu:
        raise SystemExit("lane: qemu-system-x86_64 is not installed (apt-get install qemu-system-x86)")
    arguments = [
        qemu, "-accel", "tcg", "-cpu", "max", "-m", "2G", "-smp", "1", "-display", "none",
        # The console on stdio without QEMU's Ctrl-A multiplexer and with Ctrl-C passed through,
        # so an interactive session's keys all reach the command.
        "-chardev", "stdio,id=console,signal=off", "-serial", "chardev:console",
        "-monitor", "none", "-no-reboot", "-nodefaults",
        "-kernel", vmlinuz, "-initrd", initrd,
        "-append", "console=ttyS0 quiet loglevel=3 panic=-1",
        "-virtfs", "local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap",
    ]
    process = subprocess.Popen(
        arguments, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        stdin=None if interactive else subprocess.DEVNULL)
    statuses = {}
    started = time.monotonic()
    deadline = started + boot_timeout
    current = None
    buffer = b""
    reason = None
    try:
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                reason = (f"command {current} did not finish within {command_timeout:.0f} s" if current
                          else f"the outer VM did not become ready within {boot_timeout:.0f} s")
                break
            ready, _, _ = select.select([process.stdout], [], [], min(remaining, 1.0))
            if not ready:
                continue
            chunk = os.read(process.stdout.fileno(), 65536)
            if not chunk:
                break
            buffer += chunk
            while b"\n" in buffer:
                line, buffer = buffer.split(b"\n", 1)
                text = line.decode(errors="replace").rstrip("\r")
                # A marker may follow output that did not end its last line.
                marker = text.find("SKVM-LANE-")
                if marker > 0:
                    if current is not None:
                        sys.stdout.write(text[:marker] + "\n")
                    text = text[marker:]
                if text.startswith("SKVM-LANE-READY"):
                    log(f"outer VM ready after {time.monotonic() - started:.1f} s")
                    deadline = time.monotonic() + command_timeout + 5
                elif text.startswith("SKVM-LANE-BEGIN "):
                    current = int(text.split()[1])
                    deadline = time.monotonic() + command_timeout + 5
                elif text.startswith("SKVM-LANE-END "):
                    _, number, status = text.split()
                    statuses[int(number)] = int(status)
                    current = None
                    deadline = time.monotonic() + command_timeout + 5
                elif text.startswith("SKVM-LANE-ERROR "):
                    reason = text[len("SKVM-LANE-ERROR "):]
                    log(reason)
                elif current is not None:
                    sys.stdout.write(text + "\n")
                    sys.stdout.flush()
                elif verbose:
                    sys.stderr.write(f"lane console: {text}\n")
    finally:
        if process.poll() is None:
            process.kill()
        process.wait()
    return statuses, len(statuses) == len(commands), reason


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--commands", help="a file with one shell command per line")
    parser.add_argument("--timeout", type=float, default=300, help="seconds per command (default 300)")
    parser.add_argument("--boot-timeout", type=float, default=120, help="seconds for the outer VM to be ready")
    parser.add_argument("--retries", type=int, default=1, help="reboots of an outer VM that hangs (default 1)")
    parser.add_argument("--verbose", action="store_true", help="show the outer VM's own console output too")
    parser.add_argument("--interactive", action="store_true",
                        help="connect this terminal to the command (for a guest shell); no retries")
    parser.add_argument("command", nargs=argparse.REMAINDER)
    arguments = parser.parse_args()
    command = arguments.command[1:] if arguments.command[:1] == ["--"] else arguments.command
    if arguments.commands:
        commands = [line for line in open(arguments.commands).read().splitlines() if line.strip()]
    elif command:
        commands = [" ".join(command)]
    else:
        parser.error("give a command after --, or --commands FILE")

    vmlinuz, base = prepare_kit()
    with tempfile.NamedTemporaryFile(prefix="skvm-lane-", suffix=".initrd") as initrd:
        # The small uncompressed job archive first, then the compressed base: the
        # kernel unpacks concatenated archives, but not an uncompressed one after a compressed one.
        initrd.write(job_archive(commands, os.getcwd(), arguments.timeout, arguments.interactive))
        initrd.write(open(base, "rb").read())
        initrd.flush()
        for attempt in range(0 if arguments.interactive else arguments.retries, arguments.retries + 1):
            start = time.monotonic()
            statuses, complete, reason = boot_and_run(
                vmlinuz, initrd.name, commands, arguments.boot_timeout, arguments.timeout, arguments.verbose,
                arguments.interactive)
            if complete:
                log(f"{len(commands)} command(s) in {time.monotonic() - start:.1f} s")
                break
            log(f"outer VM failed: {reason or 'it stopped before every command had run'}"
                + (" — retrying" if attempt < arguments.retries else ""))
        else:
            sys.exit(125)
    print("lane: statuses " + " ".join(str(statuses[n]) for n in sorted(statuses)), file=sys.stderr)
    failed = {number: status for number, status in statuses.items() if status != 0}
    for number, status in failed.items():
        what = "was killed by the lane's timeout" if status == 137 else f"exited with status {status}"
        log(f"command {number} ({commands[number - 1][:80]}) {what}")
    sys.exit(statuses[len(commands)] if len(commands) == 1 else (1 if failed else 0))


if __name__ == "__main__":
    main()
