import Foundation
import GuestKit
import KVM
import Synchronization
import Testing

/// Where Linux guests can run: directly when the host's KVM is VMX/SVM, else through the lane.
enum LinuxGuestHost {
  /// nil when Linux guests can run here (directly or through the lane); otherwise why not.
  static let unavailableReason: String? = {
    if HostKVMKind.detect().runsStockLinuxUserspace && access("/dev/kvm", R_OK | W_OK) == 0 { return nil }
    if let reason = LaneAvailability.reason {
      return
        "this host's KVM (\(HostKVMKind.detect().moduleName)) cannot run Linux user space and the lane cannot run: \(reason)"
    }
    return nil
  }()

  static var usesLane: Bool { !HostKVMKind.detect().runsStockLinuxUserspace || access("/dev/kvm", R_OK | W_OK) != 0 }

  struct Session {
    let status: Int32
    let transcript: String
    var passed: Bool { status == 0 && transcript.contains(" ok (status") }
  }

  /// Runs Tests/Linux/guest_session.py with `steps` against `skvm run arguments`.
  /// With `monitor`, skvm serves QMP on a fresh socket the steps' `qmp:` commands use.
  static func session(
    _ name: String, steps: [String], skvm arguments: [String], monitor: Bool = false, timeout: Int = 200
  ) async throws -> Session {
    let driver = ProbeBuilder.repositoryRoot.appendingPathComponent("Tests/Linux/guest_session.py").path
    let skvm = CommandLineTests.executable.path
    let socket = "/tmp/skvm-session-\(getpid())-\(name).qmp"
    let python = monitor ? MonitorGuestTests.python : "python3"
    let options = ["--name", name, "--timeout", String(timeout)] + (monitor ? ["--qmp-socket", socket] : [])
    let qmp = monitor ? ["--qmp", "unix:\(socket),server=on,wait=off"] : []
    let words = [python, driver] + options + steps + ["--", skvm] + arguments + qmp
    let quoted = words.map { "'" + $0.replacingOccurrences(of: "'", with: "'\\''") + "'" }.joined(separator: " ")
    let result =
      usesLane
      ? try await ChildProcess.run(
        ProbeBuilder.repositoryRoot.appendingPathComponent("scripts/lane"),
        ["--timeout", String(timeout + 30), "--", quoted], directory: ProbeBuilder.repositoryRoot, mergeErrors: true)
      : try await ChildProcess.run(
        URL(fileURLWithPath: "/usr/bin/env"), words, directory: ProbeBuilder.repositoryRoot, mergeErrors: true)
    return Session(status: result.status, transcript: result.output)
  }

  /// Several sessions one after another, in one lane boot where the lane is used: each is
  /// (name, steps, skvm arguments, with a monitor); they stop at the first that fails.
  static func sessions(_ list: [(String, [String], [String], Bool)], prelude: String = "true", timeout: Int = 200)
    async throws -> Session
  {
    let commands = list.map { name, steps, arguments, monitor in
      sessionCommand(name, steps: steps, skvm: arguments, monitor: monitor, timeout: timeout)
    }
    return try await shell(([prelude] + commands).joined(separator: " && "), timeout: timeout * list.count + 30)
  }

  /// Sessions that share one boot of the lane (its outer VM boots once for all of them): the
  /// first test that asks runs every one, one after another whatever the others did, and each
  /// test then reads its own part of the transcript.
  final class SessionBatch: @unchecked Sendable {
    struct Spec {
      let name: String
      let steps: [String]
      let arguments: [String]
      var monitor = false
      var timeout = 200
      /// What runs instead of skvm (another VMM, the oracle), given its full path.
      var program: String? = nil
    }
    private let specs: [Spec]
    /// The one run of the whole batch, started by the first test that asks.
    private let batchRun = Mutex<Task<[String: Session], any Error>?>(nil)
    /// Made before the first session runs (files the sessions use); its result is kept.
    private let prepare: @Sendable () throws -> Void
    /// Removed once every session's outcome has been read.
    private let workDirectory: String?
    private let read = Mutex(0)

    init(
      _ specs: [Spec], workDirectory: String? = nil, prepare: @escaping @Sendable () throws -> Void = {}
    ) {
      self.specs = specs
      self.workDirectory = workDirectory
      self.prepare = prepare
    }

    /// Session `name`'s outcome: its status and its part of the transcript.
    func session(_ name: String) async throws -> Session {
      let session = try await run(name)
      let count = read.withLock { count in
        count += 1
        return count
      }
      if count == specs.count, let workDirectory { try? FileManager.default.removeItem(atPath: workDirectory) }
      return session
    }

    private func run(_ name: String) async throws -> Session {
      let task = batchRun.withLock { task in
        if let task { return task }
        let started = Task { [specs, prepare] () async throws -> [String: Session] in
          try prepare()
          let commands = specs.map {
            sessionCommand(
              $0.name, steps: $0.steps, skvm: $0.arguments, monitor: $0.monitor, timeout: $0.timeout,
              program: $0.program)
          }
          let line = commands.joined(separator: "; ")
          let timeout = specs.reduce(30) { $0 + $1.timeout + 30 }
          let run = try await shell(line, timeout: timeout)
          return Dictionary(uniqueKeysWithValues: specs.map { ($0.name, Self.part($0.name, of: run.transcript)) })
        }
        task = started
        return started
      }
      let results = try await task.value
      return results[name] ?? Session(status: -1, transcript: "no session named \(name) in the batch")
    }

    /// The transcript from "=== session NAME" to the next session's start.
    /// When the lane caught a stall of its outer VM and ran the batch again, the last attempt counts.
    private static func part(_ name: String, of transcript: String) -> Session {
      guard let start = transcript.range(of: "=== session \(name)\n", options: .backwards) else {
        return Session(status: -1, transcript: "session \(name) never started:\n\(transcript)")
      }
      let rest = transcript[start.lowerBound...]
      let end = rest.dropFirst(4).range(of: "=== session ")?.lowerBound ?? rest.endIndex
      let text = String(rest[..<end])
      return Session(status: text.contains("=== result \(name) ok") ? 0 : 1, transcript: text)
    }
  }

  /// The shell command that runs one session (for scripts that wrap sessions in more); `program`
  /// runs in skvm's place when given.
  static func sessionCommand(
    _ name: String, steps: [String], skvm arguments: [String], monitor: Bool = false, timeout: Int = 120,
    program: String? = nil
  ) -> String {
    let driver = ProbeBuilder.repositoryRoot.appendingPathComponent("Tests/Linux/guest_session.py").path
    let skvm = program ?? CommandLineTests.executable.path
    let socket = "/tmp/skvm-session-\(getpid())-\(name).qmp"
    let options = ["--name", name, "--timeout", String(timeout)] + (monitor ? ["--qmp-socket", socket] : [])
    let qmp = monitor ? ["--qmp", "unix:\(socket),server=on,wait=off"] : []
    return quote([MonitorGuestTests.python, driver] + options + steps + ["--", skvm] + arguments + qmp)
  }

  /// Words quoted for sh.
  static func quote(_ words: [String]) -> String {
    words.map { "'" + $0.replacingOccurrences(of: "'", with: "'\\''") + "'" }.joined(separator: " ")
  }

  /// Runs a shell command line where Linux guests run (the lane, or here), in one lane boot.
  static func shell(_ line: String, timeout: Int) async throws -> Session {
    let result =
      usesLane
      ? try await ChildProcess.run(
        ProbeBuilder.repositoryRoot.appendingPathComponent("scripts/lane"),
        ["--timeout", String(timeout), "--", line], directory: ProbeBuilder.repositoryRoot, mergeErrors: true)
      : try await ChildProcess.run(
        URL(fileURLWithPath: "/bin/sh"), ["-c", line], directory: ProbeBuilder.repositoryRoot, mergeErrors: true)
    return Session(status: result.status, transcript: result.output)
  }
}

/// The default guest (Debian's cloud kernel, busybox initramfs) on a real VMX/SVM KVM.
@Suite(
  "Linux guests", .serialized,
  .enabled(if: LinuxGuestHost.unavailableReason == nil, Comment(rawValue: LinuxGuestHost.unavailableReason ?? "")))
struct LinuxGuestTests {
  /// Files the batch's sessions use, made on the host before the lane boots (built once).
  struct Prepared {
    static let directory = "/tmp/skvm-linux-\(getpid())"
    /// 8 MiB, each sector starting SECTnnnn; the same as qcow2, attached read-only.
    static let raw = directory + "/disk.raw"
    static let qcow2 = directory + "/disk.qcow2"
    /// 1 MiB of '.', INTX-PATTERN at 4096.
    static let intx = directory + "/intx.raw"
    /// The kit kernel's vmlinux (ELF, entered at its PVH note).
    static let vmlinux = directory + "/vmlinux"
    /// The kit's initramfs, beside it.
    static let initrd = directory + "/initrd.gz"

    static let made: Result<Void, KernelPayload.Failure> = {
      do {
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        var bytes = [UInt8](repeating: 0, count: 8 << 20)
        for sector in 0..<(bytes.count / 512) {
          bytes.replaceSubrange(
            sector * 512..<sector * 512 + 8, with: Array(String(format: "SECT%04d", sector % 10000).utf8))
        }
        try Data(bytes).write(to: URL(fileURLWithPath: raw))
        let created = try CommandLineTests.skvm(["img", "convert", "-O", "qcow2", raw, qcow2])
        guard created.status == 0 else { return .failure(.init(description: "img convert: \(created.errors)")) }
        var intxBytes = [UInt8](repeating: 0x2E, count: 1 << 20)
        intxBytes.replaceSubrange(4096..<4096 + 12, with: Array("INTX-PATTERN".utf8))
        try Data(intxBytes).write(to: URL(fileURLWithPath: intx))
        let kit = try GuestKit.prepare()
        let extracted = try KernelPayload.extractVmlinux(fromBzImage: kit.kernelPath)
        try? FileManager.default.removeItem(atPath: vmlinux)
        try FileManager.default.moveItem(atPath: extracted, toPath: vmlinux)
        try? FileManager.default.removeItem(atPath: initrd)
        try FileManager.default.copyItem(atPath: kit.initrdPath, toPath: initrd)
        return .success(())
      } catch let error as KernelPayload.Failure {
        return .failure(error)
      } catch {
        return .failure(.init(description: "\(error)"))
      }
    }()
  }

  /// Every session that needs no host setup beyond `Prepared`: one lane boot for all of them.
  static let batch = LinuxGuestHost.SessionBatch(
    [
      .init(
        name: "basic",
        steps: [
          "expect:SKVM-GUEST-READY", "send:echo answer-$((6*7))", "expect:answer-42",
          "send:echo bridge=$(cat /sys/bus/pci/devices/0000:00:00.0/vendor)", "expect:bridge=0x1b36",
          "send:poweroff -f", "exit:0",
        ], arguments: ["run"]),
      .init(
        name: "elf-smp",
        steps: [
          "expect:SKVM-GUEST-READY", "send:echo cpus=$(nproc)", "expect:cpus=2",
          "send:irq=$(grep virtio0-input /proc/interrupts | cut -d: -f1 | tr -d ' '); echo irq-found-$((${irq:-0} > 0))",
          "expect:irq-found-1",
          // Each move reprograms the MSI-X entry (a new destination): skvm rewrites the GSI route.
          "send:for c in 1 2 1 2; do echo $c > /proc/irq/$irq/smp_affinity; head -c 4096 /dev/hwrng | wc -c; done >/dev/null; "
            + "set -- $(grep virtio0-input /proc/interrupts); echo both=$(($2 > 0 && $3 > 0))",
          "expect:both=1",
          "send:reboot -f", "exit:0",
        ],
        arguments: [
          "run", "--kernel", Prepared.vmlinux, "--initrd", Prepared.initrd,
          "--cmdline", GuestKit.defaultCommandLine, "--cpus", "2", "--rng",
        ]),
      .init(
        name: "panic",
        steps: ["expect:SKVM-GUEST-READY", "send:echo c > /proc/sysrq-trigger", "expect:Kernel panic", "exit:2"],
        arguments: ["run"]),
      .init(
        name: "qmp",
        steps: [
          "expect:SKVM-GUEST-READY", "qmp:system_reset", "qmp-event:RESET", "expect:SKVM-GUEST-READY",
          "send:echo rebooted-$((40+2))", "expect:rebooted-42", "qmp:system_powerdown", "qmp-event:SHUTDOWN", "exit:0",
        ], arguments: ["run"], monitor: true, timeout: 400),  // two boots in one session's time
      .init(
        name: "virtio-devices",
        steps: [
          "expect:SKVM-GUEST-READY",
          "send:echo tty=$(tty) active=$(cat /sys/class/tty/console/active)", "expect:tty=/dev/hvc0 active=hvc0",
          "send:dd if=/dev/vda bs=512 skip=777 count=1 2>/dev/null | head -c 8; echo",
          "expect:SECT0777",
          "send:printf 'GUEST-WROTE-THIS' | dd of=/dev/vda bs=512 seek=100 conv=notrunc 2>/dev/null; sync; echo synced",
          "expect:synced",
          "send:dd if=/dev/vdb bs=512 skip=4095 count=1 2>/dev/null | head -c 8; echo",
          "expect:SECT4095",
          "send:dd if=/dev/zero of=/dev/vdb bs=512 count=1 2>/dev/null && echo WRITE-ACCEPTED || echo WRITE-REFUSED",
          "expect:WRITE-REFUSED",
          "send:echo rng=$(cat /sys/class/misc/hw_random/rng_current) bytes=$(head -c 64 /dev/hwrng | wc -c)",
          "expect:rng=virtio_rng.0 bytes=64",
          // The kernel took ECAM from MCFG (it insists on the motherboard reservation first) and
          // reaches the PCI Express functions' extended configuration space through it.
          "send:echo ecam=$(dmesg | grep -c 'MMCONFIG at \\[mem 0xc0000000-0xc00fffff\\] reserved')", "expect:ecam=1",
          "send:echo config=$(wc -c < /sys/bus/pci/devices/0000:00:01.0/config)", "expect:config=4096",
          // Interrupts arrive as MSI-X messages (irqfd routes), one vector per queue plus config.
          "send:echo msi=$(grep virtio0-req /proc/interrupts | grep -c MSI)", "expect:msi=1",
          // Several requests in flight: 16 parallel readers, and the data is still right.
          "send:for i in 0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15; do dd if=/dev/vda bs=4096 skip=$((i * 64)) count=64 iflag=direct 2>/dev/null | md5sum > /tmp/p$i & done; wait; echo distinct=$(cat /tmp/p* | sort -u | wc -l)",
          "expect:distinct=16",
          "send:poweroff -f", "exit:0",
          // Where skvm ran (inside the lane, the host's /tmp is an overlay): the bytes are in the file.
          "host:dd if=\(Prepared.raw) bs=512 skip=100 count=1 2>/dev/null | head -c 16", "expect:GUEST-WROTE-THIS",
          "host:qemu-img check \(Prepared.qcow2)", "expect:No errors were found",
        ],
        arguments: [
          "run", "--console", "virtio", "--stats", "--disk", Prepared.raw, "--disk",
          "\(Prepared.qcow2),format=qcow2,readonly=on", "--rng",
        ]),
      .init(
        name: "intx",
        steps: [
          "expect:SKVM-GUEST-READY",
          "send:dd if=/dev/vda bs=4096 skip=1 count=1 2>/dev/null | head -c 12; echo",
          "expect:INTX-PATTERN",
          // The interrupt is a level-triggered IOAPIC pin (GSI 17 for slot 1), not a message.
          "send:echo intx=$(grep virtio0 /proc/interrupts | grep -c 'IO-APIC.*17-fasteoi')", "expect:intx=1",
          "send:poweroff -f", "exit:0",
        ],
        arguments: ["run", "--disk", Prepared.intx, "--cmdline", "\(GuestKit.defaultCommandLine) pci=nomsi"]),
    ], workDirectory: Prepared.directory, prepare: { try Prepared.made.get() })

  @Test(
    "The default guest reaches SKVM-GUEST-READY without alarming messages, finds the PCI host bridge, runs a typed command, and poweroff -f ends with 0"
  )
  func commandAndPowerOff() async throws {
    let session = try await Self.batch.session("basic")
    #expect(session.passed, "\(session.transcript)")
    #expect(
      !session.transcript.contains("PCI: Fatal"), "a machine without devices still has PCI: \(session.transcript)")
  }

  @Test(
    "Snapshots of the default guest with 2 vCPUs: savevm and migrate to file:, quit, then --incoming file: and --loadvm: the tmpfs file is there, the loop runs on, date moved forward, /dev/vda works"
  )
  func snapshots() async throws {
    let directory = "/tmp/skvm-linux-snap-\(getpid())"
    let disk = directory + "/disk.qcow2"
    let state = directory + "/machine.snap"
    let setup =
      "mkdir -p \(directory) && rm -f \(disk) \(state) && \(CommandLineTests.executable.path) img create -q -f qcow2 \(disk) 8M"
    let arguments = ["run", "--cpus", "2", "--disk", disk]
    let restored = [
      "send:cat /tmp/marker", "expect:written-before-the-snapshot",
      "send:c1=$(cat /tmp/counter); sleep 2; c2=$(cat /tmp/counter); echo loop=$((c2 > c1))", "expect:loop=1",
      "send:echo moved=$(( $(date +%s) > $(cat /tmp/date-before) ))", "expect:moved=1",
      "send:echo cpus=$(nproc)", "expect:cpus=2",
      "send:printf after-restore | dd of=/dev/vda bs=512 seek=9 conv=notrunc 2>/dev/null; sync; dd if=/dev/vda bs=512 skip=9 count=1 2>/dev/null | head -c 13; echo",
      "expect:after-restore",
      "send:poweroff -f", "exit:0",
    ]
    let session = try await LinuxGuestHost.sessions(
      [
        (
          "snapshot-save",
          [
            "expect:SKVM-GUEST-READY",
            "send:echo written-before-the-snapshot > /tmp/marker; date +%s > /tmp/date-before",
            "send:(i=0; while true; do i=$((i+1)); echo $i > /tmp/counter; sleep 0.2; done) &",
            "send:sleep 1; echo started-$(cat /tmp/counter)", "expect:started-",
            "hmp:savevm one", "hmp:info snapshots", "expect:one",
            "hmp:migrate \"file:\(state)\"", "hmp-until:Migration status: completed|info migrate",
            "hmp:quit", "exit:0",
          ], arguments, true
        ),
        ("snapshot-incoming", restored, ["run", "--incoming", "file:\(state)"], false),
        ("snapshot-loadvm", restored, arguments + ["--loadvm", "one"], false),
      ].map { ($0.0, $0.1, $0.2, $0.3) }, prelude: setup, timeout: 250)
    #expect(
      session.passed && session.transcript.components(separatedBy: " ok (status").count == 4, "\(session.transcript)")
  }

  @Test("A kernel panic ends the run with status 2 and the panic text visible")
  func panic() async throws {
    let session = try await Self.batch.session("panic")
    #expect(session.passed, "\(session.transcript)")
    #expect(session.transcript.contains("the guest kernel panicked"))
  }

  @Test("QMP system_reset boots the guest again; system_powerdown powers it off cleanly (status 0)")
  func monitorResetAndPowerdown() async throws {
    let session = try await Self.batch.session("qmp")
    #expect(session.passed, "\(session.transcript)")
    #expect(session.transcript.contains("'guest': True, 'reason': 'guest-shutdown'"), "\(session.transcript)")
  }

  @Test(
    "virtio devices: the shell on hvc0 (virtio-console); /dev/vda reads the host's pattern and writes it reads back after sync, with MSI-X, ECAM and 16 requests in flight; a read-only qcow2 /dev/vdb refuses writes; virtio-rng serves bytes"
  )
  func virtioDevices() async throws {
    let session = try await Self.batch.session("virtio-devices")
    #expect(session.passed, "\(session.transcript)")
    #expect(
      session.transcript.contains("vda: ") && session.transcript.contains("rng: ")
        && session.transcript.contains("hvc0: "), "--stats lists the devices")
  }

  @Test("Without MSI (pci=nomsi) virtio-blk interrupts take INTx through the DSDT's _PRT")
  func virtioBlockOverINTx() async throws {
    let session = try await Self.batch.session("intx")
    #expect(session.passed, "\(session.transcript)")
  }

  @Test(
    "The kit kernel as an ELF vmlinux (entered at its PVH note) with two CPUs: nproc is 2, an MSI-X vector moved between CPUs (IRQ affinity) is rerouted so interrupts arrive on both, reboot -f ends with 0"
  )
  func elfKernelWithTwoCPUs() async throws {
    let session = try await Self.batch.session("elf-smp")
    #expect(session.passed, "\(session.transcript)")
  }

  @Test(
    "Live migration of the default guest writing a file system on qcow2 and dirtying RAM (and, where taps can be made, receiving a TCP stream through vhost-net): the shell answers on the destination, the loops run on, the stream arrives intact, qemu-img check and fsck find the image clean"
  )
  func liveMigration() async throws {
    let directory = "/tmp/skvm-linux-migrate-\(getpid())"
    // A qcow2 image (an ext4 file system made raw, then converted): afterwards qemu-img check
    // must find it clean and fsck its file system.
    let disk = directory + "/disk.qcow2"
    let port = 19_000 + Int(getpid() % 1000)
    // Where taps can be made: a multiqueue tap both sides attach to, vhost-net moving the
    // frames, and a host sender streaming through the migration — the pages the kernel writes
    // (frames, used rings) must reach the destination, or the stream's md5 differs or stalls.
    let stream = LinuxNetworkTests.canUseTaps
    let sender = ProbeBuilder.repositoryRoot.appendingPathComponent("Tests/Linux/stream_sender.py").path
    let mebibytes = 24
    let digest =
      stream
      ? try await ChildProcess.run(
        URL(fileURLWithPath: "/usr/bin/env"),
        ["python3", sender, "x", "1", "--mebibytes", "\(mebibytes)", "--md5-only"]
      ).output.trimmingCharacters(in: .whitespacesAndNewlines) : ""
    let nic = stream ? ["--net", "tap,ifname=skvmmig0,queues=2,vhost=on"] : []
    let listen =
      stream
      ? [
        "send:ip addr add 192.168.79.2/24 dev eth0 && ip link set eth0 up && { nc -l -p 5001 < /dev/null | md5sum > /tmp/sum; touch /tmp/done; } & echo LISTENING",
        "expect:LISTENING", "sleep:1",
      ] : []
    let received =
      stream
      ? [
        "send:while [ ! -e /tmp/done ]; do sleep 1; done; echo STREAM $(cat /tmp/sum)", "expect:STREAM \(digest)",
      ] : []
    let source = LinuxGuestHost.sessionCommand(
      "source",
      steps: [
        "expect:SKVM-GUEST-READY", "send:mkdir -p /mnt && mount -t ext4 /dev/vda /mnt && echo MOUNTED=$?",
        "expect:MOUNTED=0",
        // A writer on the disk and a loop dirtying RAM, both running through the migration.
        "send:(while true; do dd if=/dev/urandom of=/mnt/f bs=4k count=64 2>/dev/null; sync; done) & (while true; do dd if=/dev/zero of=/tmp/x bs=1M count=4 2>/dev/null; sleep 0.5; done) & echo LOOPS",
        "expect:LOOPS", "sleep:2",
      ] + listen + [
        // The lane is an emulator (tens of Mbit/s through loopback): a generous downtime limit.
        "qmp:migrate-set-parameters {\"downtime-limit\": 5000}",
        "qmp:migrate {\"uri\": \"tcp:127.0.0.1:\(port)\"}", "hmp-until:Migration status: completed|info migrate",
        "hmp:info status", "expect:postmigrate", "qmp:quit", "exit:0",
      ],
      skvm: ["run", "--disk", disk, "--memory", "128M"] + nic, monitor: true, timeout: 300)
    let destination = LinuxGuestHost.sessionCommand(
      "destination",
      steps: [
        "expect:waiting for a migration", "hmp-until:running|info status",
        "send:echo alive-$((6*7)); kill -0 %1 && kill -0 %2 && echo LOOPS-ALIVE", "expect:alive-42",
        "expect:LOOPS-ALIVE",
      ] + received + [
        "send:kill %1 %2; wait; sync; umount /mnt; echo UMOUNT=$?", "expect:UMOUNT=0", "send:poweroff -f", "exit:0",
        "host:qemu-img check \(disk); qemu-img convert -O raw \(disk) \(directory)/check.raw && fsck.ext4 -fn \(directory)/check.raw >/dev/null 2>&1; echo FSCK=$?",
        "expect:No errors were found", "expect:FSCK=0",
      ],
      skvm: ["run", "--incoming", "tcp::\(port)"], monitor: true, timeout: 300)
    var line =
      "mkdir -p \(directory) && truncate -s 64M \(directory)/fs.raw && mkfs.ext4 -q -F \(directory)/fs.raw && "
      + "qemu-img convert -O qcow2 \(directory)/fs.raw \(disk) && "
      + "{ \(destination) > \(directory)/destination.log 2>&1 & waiter=$!; } && sleep 1 && \(source); "
      + "status=$?; wait $waiter; dstatus=$?; cat \(directory)/destination.log; "
    if stream {
      line += "cat \(directory)/sender.log; "
      line =
        "ip link set lo up && ip tuntap add skvmmig0 mode tap multi_queue && ip addr add 192.168.79.1/24 dev skvmmig0 && "
        + "ip link set skvmmig0 up && mkdir -p \(directory) && "
        + "{ python3 \(sender) 192.168.79.2 5001 --mebibytes \(mebibytes) --interval 0.2 > \(directory)/sender.log 2>&1 & } && "
        + line
    }
    line += "rm -rf \(directory); [ $status = 0 ] && [ $dstatus = 0 ]"
    if stream { line = "unshare -n sh -c " + LinuxGuestHost.quote([line]) }
    let session = try await LinuxGuestHost.shell(line, timeout: 700)
    #expect(session.status == 0, "\(session.transcript)")
    #expect(session.transcript.contains("=== result source ok"), "\(session.transcript)")
    #expect(session.transcript.contains("=== result destination ok"), "\(session.transcript)")
    if stream {
      #expect(session.transcript.contains("md5 \(digest)"), "the sender finished: \(session.transcript)")
    }
  }
}

/// The ELF vmlinux inside a bzImage: its compressed payload (boot protocol 2.08+ fields
/// payload_offset/payload_length), decompressed with the matching host tool.
enum KernelPayload {
  struct Failure: Error, CustomStringConvertible { let description: String }

  static func extractVmlinux(fromBzImage path: String) throws -> String {
    let bytes = [UInt8](try Data(contentsOf: URL(fileURLWithPath: path)))
    func le32(_ at: Int) -> Int { (0..<4).reduce(0) { $0 | Int(bytes[at + $1]) << (8 * $1) } }
    guard bytes.count > 0x250 else { throw Failure(description: "\(path) is too short for a bzImage") }
    let start = (Int(bytes[0x1f1]) + 1) * 512 + le32(0x248)
    let end = start + le32(0x24c)
    guard start < end, end <= bytes.count else { throw Failure(description: "\(path): payload out of range") }
    let payload = Array(bytes[start..<end])
    let tools: [([UInt8], [String])] = [
      ([0x02, 0x21, 0x4c, 0x18], ["lz4", "-dc"]), ([0x1f, 0x8b], ["gzip", "-dc"]),
      ([0xfd, 0x37, 0x7a, 0x58, 0x5a], ["xz", "-dc"]), ([0x28, 0xb5, 0x2f, 0xfd], ["zstd", "-dcq"]),
    ]
    guard let tool = tools.first(where: { payload.starts(with: $0.0) })?.1 else {
      throw Failure(description: "\(path): unknown payload compression \(payload.prefix(4))")
    }
    let directory = FileManager.default.temporaryDirectory.path
    let compressed = directory + "/skvm-vmlinux-\(getpid()).payload"
    let output = directory + "/skvm-vmlinux-\(getpid())"
    try Data(payload).write(to: URL(fileURLWithPath: compressed))
    defer { try? FileManager.default.removeItem(atPath: compressed) }
    let process = Process()
    process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
    process.arguments =
      ["sh", "-c", "\"$@\" < '\(compressed)' > '\(output)' 2>/dev/null; [ -s '\(output)' ]", "sh"] + tool
    try process.run()
    process.waitUntilExit()
    // lz4 legacy frames end with trailing data the tool reports as an error; the output is what counts.
    guard process.terminationStatus == 0 else {
      throw Failure(description: "\(tool[0]) could not decompress the payload of \(path) (is it installed?)")
    }
    return output
  }
}
