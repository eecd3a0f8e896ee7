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
An outer VM that stops making progress (no heartbeat for --stall-limit seconds) is
killed and booted again for the commands that had not finished (--retries times);
the summary line counts boots and stalls.
"""
import argparse
import ctypes
import fcntl
import gzip
import hashlib
import os
import re
import select
import socket
import shutil
import signal
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
KERNEL_METAPACKAGE = "linux-image-amd64"
# Loaded in this order; dependencies are resolved with modinfo and put first.
WANTED_MODULES = ["virtio_pci", "9pnet_virtio", "9p", "overlay", "irqbypass", "kvm", "kvm-amd", "tun", "bridge", "macvtap", "vhost_net"]


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


def job_archive(commands, first, cwd, timeout, interactive=False):
    """The job: commands numbered from first (a retry runs the ones not yet finished)."""
    archive = Cpio()
    if interactive:
        archive.file("job.interactive", b"")
    archive.file("job", ("\n".join(commands) + "\n").encode())
    archive.file("job.first", str(first).encode())
    archive.file("job.cwd", cwd.encode())
    archive.file("job.timeout", str(int(timeout)).encode())
    return archive.finish()


MARKER = b"SKVM-LANE-"

# The outer VM's vCPUs (SKVM_LANE_CPUS, default 1). More than one (multi-threaded TCG, a host
# thread each) ran the lane pass faster, but nested guests were not reliable on it: QEMU 7.2 hung
# loading Linux, and skvm's guests triple-faulted now and then after a reboot or a migration —
# neither seen with one outer vCPU, so one it is until that is understood.
OUTER_CPUS = max(1, int(os.environ.get("SKVM_LANE_CPUS") or 1))

# More of the outer kernel's command line (SKVM_LANE_APPEND), e.g. kvm_amd.vgif=0: module
# parameters there reach the modules the outer init loads.
OUTER_KERNEL_ARGUMENTS = os.environ.get("SKVM_LANE_APPEND", "").split()

# Seconds of heartbeat silence (it beats every 2 s) before the lane presses a key on the outer
# VM's keyboard, and again as long as it stays silent (see boot_and_run).
KICK_AFTER = 12
KICK_AFTER_BOOT = 40


class Outcome:
    """How one outer boot ended: statuses by command number, and why it stopped early."""

    def __init__(self):
        self.statuses = {}
        self.reason = None
        self.stalled = False
        # Stalls a key press ended (the boot went on).
        self.kicks = 0


def boot_and_run(vmlinuz, initrd, first, count, limits, verbose=False, interactive=False):
    """One outer boot running commands first..first+count-1. Returns an Outcome.

    The outer init writes a heartbeat to its second serial port (a file here) every few
    seconds whatever the commands do; silence past limits.stall means the outer VM stopped
    making progress (the stall this lane has shown under TCG), and the boot is abandoned."""
    qemu = shutil.which("qemu-system-x86_64")
    if not qemu:
        raise SystemExit("lane: qemu-system-x86_64 is not installed (apt-get install qemu-system-x86)")
    heartbeat = tempfile.NamedTemporaryFile(prefix="skvm-lane-", suffix=".heartbeat")
    arguments = [
        qemu, "-accel", "tcg,thread=multi", "-cpu", "max", "-m", "2G", "-smp", str(OUTER_CPUS), "-display", "none",
        # The console on stdio without QEMU's Ctrl-A multiplexer and with Ctrl-C passed through,
        # so an interactive session's keys all reach the command; ttyS1 carries the heartbeat.
        "-chardev", "stdio,id=console,signal=off", "-serial", "chardev:console",
        "-chardev", f"file,id=heartbeat,path={heartbeat.name}", "-serial", "chardev:heartbeat",
        # Its human monitor on a socket: a stall's report says where the outer vCPU was.
        "-monitor", f"unix:{heartbeat.name}.monitor,server=on,wait=off", "-no-reboot", "-nodefaults",
        "-kernel", vmlinuz, "-initrd", initrd,
        "-append", " ".join(["console=ttyS0 quiet loglevel=3 panic=-1 nosoftlockup"] + OUTER_KERNEL_ARGUMENTS),
        "-virtfs", "local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap",
    ]
    process = subprocess.Popen(
        arguments, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        stdin=None if interactive else subprocess.DEVNULL, preexec_fn=die_with_parent)
    outcome = Outcome()
    started = time.monotonic()
    deadline = started + limits.boot
    current = None
    buffer = b""
    beats = 0
    # Silence counts from the start: an outer kernel that stalls while it boots (before init
    # starts the heartbeat) gets a key press too.
    last_beat = started
    kicked, kicked_at, last_kick = False, 0.0, 0.0

    def emit(data):
        """Output of the running command (or of the outer VM itself, when verbose)."""
        if not data:
            return
        if current is not None:
            sys.stdout.buffer.write(data)
            sys.stdout.flush()
        elif verbose:
            sys.stderr.write(f"lane console: {data.decode(errors='replace')}")

    def handle(marker):
        nonlocal deadline, current
        if marker.startswith("SKVM-LANE-READY"):
            log(f"outer VM ready after {time.monotonic() - started:.1f} s (pid {process.pid})")
            deadline = time.monotonic() + limits.command + 5
        elif marker.startswith("SKVM-LANE-BEGIN "):
            current = int(marker.split()[1])
            deadline = time.monotonic() + limits.command + 5
        elif marker.startswith("SKVM-LANE-END "):
            _, number, status = marker.split()
            outcome.statuses[int(number)] = int(status)
            current = None
            deadline = time.monotonic() + limits.command + 5
        elif marker.startswith("SKVM-LANE-ERROR "):
            outcome.reason = marker[len("SKVM-LANE-ERROR "):]
            log(outcome.reason)

    def consume(final=False):
        """Forwards output and handles markers. Interactive sessions forward partial lines at
        once (a shell's prompt has no newline); otherwise output goes on by whole lines."""
        nonlocal buffer
        while True:
            at = buffer.find(MARKER)
            if at < 0:
                if interactive or final:
                    keep = 0 if final else next((k for k in range(len(MARKER) - 1, 0, -1) if buffer.endswith(MARKER[:k])), 0)
                    emit(buffer[:len(buffer) - keep])
                    buffer = buffer[len(buffer) - keep:]
                else:
                    cut = buffer.rfind(b"\n") + 1
                    emit(buffer[:cut].replace(b"\r\n", b"\n"))
                    buffer = buffer[cut:]
                return
            # Output before a marker that did not end its last line still gets its own line.
            before = buffer[:at]
            if before and not interactive:
                before = before.replace(b"\r\n", b"\n") + (b"" if before.endswith(b"\n") else b"\n")
            emit(before)
            buffer = buffer[at:]
            end = buffer.find(b"\n")
            if end < 0:
                return
            handle(buffer[:end].decode(errors="replace").rstrip("\r"))
            buffer = buffer[end + 1:]

    try:
        while True:
            now = time.monotonic()
            size = os.path.getsize(heartbeat.name)
            if size > beats:
                beats, last_beat = size, now
            silent = now - last_beat
            if kicked and last_beat > kicked_at:
                log(f"the outer VM runs again {last_beat - kicked_at:.1f} s after a key press")
                outcome.kicks += 1
                kicked = False
            if silent > limits.stall and beats:  # before the first beat, the boot timeout
                outcome.stalled = True
                outcome.reason = (f"the outer VM stalled: no heartbeat for {silent:.0f} s"
                                  + (f" (during command {current})" if current else "")
                                  + (", key presses did not wake it" if kicked else ""))
                break
            # Before the first beat the outer kernel is still booting (6–20 s here, longer on a
            # loaded host): a key press then waits for a longer silence.
            kick_after = KICK_AFTER if beats else KICK_AFTER_BOOT
            if silent > kick_after and now - last_kick > KICK_AFTER:
                # The stall this lane shows: the outer vCPU halted (or spinning) with its local
                # APIC timer's interrupt pending in IRR and never delivered (QEMU TCG loses
                # it; an NMI does not help). A key press on its PC keyboard is a device
                # interrupt, which makes QEMU look at the local APIC again: the timer
                # interrupt is delivered and the VM goes on. Said once per stall, with where
                # the vCPU was.
                if not kicked:
                    log(f"the outer VM has been silent for {silent:.0f} s"
                        + (f" (during command {current})" if current else "") + ": where it is, then a key press")
                report_stall(heartbeat.name + ".monitor", kick=True, describe=not kicked)
                kicked, kicked_at, last_kick = (True, now, now) if not kicked else (True, kicked_at, now)
            if now >= deadline:
                outcome.reason = (f"command {current} did not finish within {limits.command:.0f} s" if current
                                  else f"the outer VM did not become ready within {limits.boot:.0f} s")
                break
            ready, _, _ = select.select([process.stdout], [], [], min(deadline - now, 1.0))
            if not ready:
                continue
            chunk = os.read(process.stdout.fileno(), 65536)
            if not chunk:
                consume(final=True)
                break
            buffer += chunk
            consume()
    finally:
        if process.poll() is None:
            process.kill()  # SIGKILL ends a stopped process too
        process.wait()
        heartbeat.close()
        if os.path.exists(heartbeat.name + ".monitor"):
            os.unlink(heartbeat.name + ".monitor")
    if len(outcome.statuses) < count and outcome.reason is None:
        outcome.reason = "it stopped before every command had run"
    return outcome


def die_with_parent():
    """In the outer QEMU's child before exec: it is killed when the lane tool dies (a test's
    timeout killing scripts/lane must not leave an emulator running on a core)."""
    PR_SET_PDEATHSIG = 1
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def report_stall(monitor_path, kick=False, describe=True):
    """Logs where a stalled outer VM's vCPU is (its registers and local APIC, from QEMU's
    human monitor): which guest level it runs, and whether an interrupt waits; with `kick`,
    then presses a key (shift) on its PC keyboard: a device interrupt makes QEMU look at the
    local APIC again, which delivers the timer interrupt it had left pending."""
    try:
        with socket.socket(socket.AF_UNIX) as connection:
            connection.settimeout(2)
            connection.connect(monitor_path)
            connection.sendall((b"info registers\ninfo lapic\n" if describe else b"")
                               + (b"sendkey shift\n" if kick else b""))
            reply = b""
            end = time.monotonic() + 2
            while time.monotonic() < end:
                try:
                    chunk = connection.recv(65536)
                except socket.timeout:
                    break
                if not chunk:
                    break
                reply += chunk
        # What tells where it is: RIP, flags and halt state, EFER (SVME: KVM loaded), the
        # local APIC's timer and pending (IRR) and in-service (ISR) vectors.
        wanted = ("RIP=", "EFER=", "CR0=", "Timer", "LVTT", "IRR", "ISR", "APR")
        for line in reply.decode(errors="replace").splitlines():
            if line.startswith(wanted):
                log(f"stall: {line.rstrip()}")
    except OSError as error:
        log(f"stall: the outer monitor did not answer ({error})")


def take_slot():
    """Waits for one of the host's lane slots (an flock'ed file; the lock goes with the process).
    Outer VMs are emulators, each one busy core: more of them than the host has cores only
    makes every one slower (and a slow outer VM trips its commands' timeouts), so further runs
    queue here. SKVM_LANE_SLOTS sets the number (default: one per core; 0: no limit)."""
    slots = int(os.environ.get("SKVM_LANE_SLOTS", os.cpu_count() or 1))
    if slots <= 0:
        return None
    paths = [os.path.join(tempfile.gettempdir(), f"skvm-lane-slot-{os.getuid()}-{n}.lock") for n in range(slots)]
    waited = time.monotonic()
    said = False
    while True:
        for path in paths:
            handle = open(path, "a")
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.close()
                continue
            if said:
                log(f"got a lane slot after {time.monotonic() - waited:.1f} s")
            return handle
        if not said:
            log(f"waiting for a lane slot ({slots} outer VM(s) at a time on this host; SKVM_LANE_SLOTS sets it)")
            said = True
        time.sleep(0.2)


class Limits:
    def __init__(self, boot, command, stall):
        self.boot, self.command, self.stall = boot, command, stall


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--commands", help="a file with one shell command per line")
    parser.add_argument("--timeout", type=float, default=300, help="seconds per command (default 300)")
    parser.add_argument("--boot-timeout", type=float, default=120, help="seconds for the outer VM to be ready")
    parser.add_argument("--stall-limit", type=float, default=float(os.environ.get("SKVM_LANE_STALL_LIMIT", 90)),
                        help="seconds without the outer VM's heartbeat before it counts as stalled (default 90)")
    parser.add_argument("--retries", type=int, default=2,
                        help="reboots of an outer VM that stalls or fails, running the unfinished commands (default 2)")
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
        if "\n" in commands[0]:
            parser.error("a command after -- is one line (join shell commands with ; or &&, or use --commands FILE)")
    else:
        parser.error("give a command after --, or --commands FILE")

    vmlinuz, base = prepare_kit()
    base_data = open(base, "rb").read()
    slot = None if arguments.interactive else take_slot()  # held until this process ends
    limits = Limits(arguments.boot_timeout, arguments.timeout, arguments.stall_limit)
    statuses = {}
    boots = stalls = kicks = 0
    retries = 0 if arguments.interactive else arguments.retries
    began = time.monotonic()
    while True:
        first = len(statuses) + 1
        with tempfile.NamedTemporaryFile(prefix="skvm-lane-", suffix=".initrd") as initrd:
            # The small uncompressed job archive first, then the compressed base: the kernel
            # unpacks concatenated archives, but not an uncompressed one after a compressed one.
            initrd.write(job_archive(commands[first - 1:], first, os.getcwd(), arguments.timeout, arguments.interactive))
            initrd.write(base_data)
            initrd.flush()
            boots += 1
            outcome = boot_and_run(vmlinuz, initrd.name, first, len(commands) - first + 1, limits,
                                   arguments.verbose, arguments.interactive)
        statuses.update(outcome.statuses)
        stalls += outcome.stalled
        kicks += outcome.kicks
        if len(statuses) == len(commands):
            break
        # A command the lane's own timeout killed has a status; one cut off by a stall or a
        # failed boot has none and runs again from the start on the next boot.
        again = boots <= retries
        log(f"outer VM failed: {outcome.reason}"
            + (f" — rebooting it for command(s) {first + len(outcome.statuses)}–{len(commands)}" if again else ""))
        if not again:
            log(f"summary: {len(statuses)} of {len(commands)} command(s) ran; {boots} outer boot(s), {stalls} stall(s)")
            sys.exit(125)
    log(f"summary: {len(commands)} command(s) in {time.monotonic() - began:.1f} s; {boots} outer boot(s), "
        f"{stalls} stall(s) caught, {boots - 1} retr{'y' if boots == 2 else 'ies'}"
        + (f", {kicks} stall(s) ended by a key press" if kicks else ""))
    print("lane: statuses " + " ".join(str(statuses[n]) for n in sorted(statuses)), file=sys.stderr)
    failed = {number: status for number, status in statuses.items() if status != 0}
    for number, status in failed.items():
        what = "was killed by the lane's timeout" if status == 137 else f"exited with status {status}"
        log(f"command {number} ({commands[number - 1][:80]}) {what}")
    sys.exit(statuses[len(commands)] if len(commands) == 1 else (1 if failed else 0))


if __name__ == "__main__":
    main()
