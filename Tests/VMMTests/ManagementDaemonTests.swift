import Foundation
import Testing

/// skvmd and `skvm ctl` end to end, with domains running a tiny halting guest under /dev/kvm.
@Suite("Management daemon and skvm ctl")
struct ManagementDaemonTests {
  func expectSuccess(_ result: ChildProcess.Result, _ what: String, sourceLocation: SourceLocation = #_sourceLocation) {
    #expect(result.status == 0, "\(what): \(result.errors)\(result.output)", sourceLocation: sourceLocation)
  }

  func state(_ harness: ManagementHarness, _ domain: String) async throws -> String {
    try await harness.ctl(["domstate", "--reason", domain]).output.trimmingCharacters(in: .whitespacesAndNewlines)
  }

  @Test("define → start → list → suspend → resume → destroy → undefine, with virsh's words and statuses")
  func lifecycle() async throws {
    let harness = try ManagementHarness()
    try harness.startDaemon()
    let file = try harness.writeDefinition("alpha", extra: "<title>First one</title>")
    let defined = try await harness.ctl(["define", file])
    expectSuccess(defined, "define")
    #expect(defined.output.contains("Domain 'alpha' defined from \(file)"))
    var list = try await harness.ctl(["list", "--all"])
    #expect(list.output.contains(" -    alpha   shut off"), "\(list.output)")
    #expect(try await state(harness, "alpha") == "shut off (unknown)")

    let started = try await harness.ctl(["start", "alpha"])
    expectSuccess(started, "start")
    #expect(started.output == "Domain 'alpha' started\n")
    list = try await harness.ctl(["list"])
    #expect(list.output.contains("alpha   running"), "\(list.output)")
    #expect(try await state(harness, "alpha") == "running (booted)")
    let id = try await harness.ctl(["domid", "alpha"]).output.trimmingCharacters(in: .whitespacesAndNewlines)
    #expect(Int(id) != nil)
    // By id and by UUID too.
    let uuid = try await harness.ctl(["domuuid", "alpha"]).output.trimmingCharacters(in: .whitespacesAndNewlines)
    #expect(try await harness.ctl(["domname", id]).output.hasPrefix("alpha"))
    #expect(try await harness.ctl(["domname", uuid]).output.hasPrefix("alpha"))
    let info = try await harness.ctl(["dominfo", "alpha"]).output
    #expect(info.contains("State:          running") && info.contains("Max memory:     32768 KiB"), "\(info)")
    let xml = try await harness.ctl(["dumpxml", "alpha"]).output
    #expect(xml.contains("<domain type='kvm' id='\(id)'") && xml.contains("<uuid>\(uuid)</uuid>"), "\(xml)")
    #expect(try await harness.ctl(["list", "--title"]).output.contains("First one"))
    #expect(try await harness.ctl(["list", "--name"]).output == "alpha\n\n")

    let again = try await harness.ctl(["start", "alpha"])
    #expect(again.status == 1 && again.errors.contains("error: domain 'alpha' is already active"), "\(again.errors)")

    expectSuccess(try await harness.ctl(["suspend", "alpha"]), "suspend")
    #expect(try await state(harness, "alpha") == "paused (user)")
    let hmp = try await harness.ctl(["qemu-monitor-command", "alpha", "--hmp", "info", "status"])
    #expect(hmp.output.contains("VM status: paused"), "\(hmp.output)\(hmp.errors)")
    expectSuccess(try await harness.ctl(["resume", "alpha"]), "resume")
    #expect(try await state(harness, "alpha") == "running (unpaused)")
    let qmp = try await harness.ctl(["qemu-monitor-command", "alpha", #"{"execute": "query-status"}"#])
    #expect(qmp.output.contains(#""status":"running""#), "\(qmp.output)\(qmp.errors)")
    #expect(harness.domainLog("alpha").contains("ok"), "the guest's serial output is in its log")

    let pid = try #require(harness.vmmPid("alpha"))
    let destroyed = try await harness.ctl(["destroy", "alpha"])
    #expect(destroyed.output == "Domain 'alpha' destroyed\n")
    #expect(!ManagementHarness.isRunning(pid), "the VMM process is gone when destroy returns")
    #expect(try await state(harness, "alpha") == "shut off (destroyed)")
    #expect(try await harness.ctl(["domid", "alpha"]).output.hasPrefix("-"))

    let undefined = try await harness.ctl(["undefine", "alpha"])
    #expect(undefined.output == "Domain 'alpha' has been undefined\n")
    let gone = try await harness.ctl(["dominfo", "alpha"])
    #expect(gone.status == 1 && gone.errors.contains("failed to get domain 'alpha'"), "\(gone.errors)")
  }

  @Test(
    "SIGKILL the daemon with 5 domains running: a new daemon finds them; one killed meanwhile shows crashed; autostart")
  func daemonRestart() async throws {
    let harness = try ManagementHarness()
    try harness.startDaemon()
    let names = (1...5).map { "vm\($0)" }
    for name in names {
      expectSuccess(try await harness.ctl(["define", try harness.writeDefinition(name)]), "define \(name)")
      expectSuccess(try await harness.ctl(["start", name]), "start \(name)")
    }
    expectSuccess(try await harness.ctl(["define", try harness.writeDefinition("auto")]), "define auto")
    expectSuccess(try await harness.ctl(["autostart", "auto"]), "autostart")
    let pids = names.map { harness.vmmPid($0) }
    #expect(pids.allSatisfy { $0 != nil }, "\(pids)")

    harness.stopDaemon(signal: SIGKILL)
    for pid in pids.compactMap({ $0 }) { #expect(ManagementHarness.isRunning(pid), "a domain died with the daemon") }
    let down = try await harness.ctl(["list"])
    #expect(down.status == 1 && down.errors.contains("the daemon is not running"), "\(down.errors)")
    // One dies while no daemon watches.
    let victim = try #require(pids[3])
    kill(victim, SIGKILL)
    while ManagementHarness.isRunning(victim) { try await Task.sleep(for: .milliseconds(10)) }

    try harness.startDaemon()
    for name in names where name != "vm4" {
      #expect(try await state(harness, name) == "running (booted)", "\(name): \(harness.daemonLog)")
    }
    #expect(try await state(harness, "vm4") == "shut off (crashed)")
    #expect(try await state(harness, "auto") == "running (booted)")
    #expect(harness.daemonLog.contains("domain 'vm1' is running"))
    // The daemon controls the domains it found again.
    expectSuccess(try await harness.ctl(["suspend", "vm2"]), "suspend after restart")
    #expect(try await state(harness, "vm2") == "paused (user)")
    for name in names + ["auto"] where name != "vm4" {
      expectSuccess(try await harness.ctl(["destroy", name]), "destroy \(name)")
    }
    for pid in pids.compactMap({ $0 }) { #expect(!ManagementHarness.isRunning(pid)) }
    let list = try await harness.ctl(["list"])
    #expect(!list.output.contains("running"), "\(list.output)")
  }

  @Test("20 domains started and destroyed at once; two starts of one domain: one wins, one is told why")
  func concurrency() async throws {
    let harness = try ManagementHarness()
    try harness.startDaemon()
    let names = (1...20).map { "c\($0)" }
    for name in names {
      expectSuccess(try await harness.ctl(["define", try harness.writeDefinition(name, memory: 16)]), "define")
    }
    let starts = try await withThrowingTaskGroup(of: Int32.self) { group in
      for name in names { group.addTask { try await harness.ctl(["start", name]).status } }
      return try await group.reduce(into: [Int32]()) { $0.append($1) }
    }
    #expect(starts.allSatisfy { $0 == 0 }, "\(starts)")
    let running = try await harness.ctl(["list", "--state-running", "--name"])
    #expect(running.output.split(separator: "\n").count == 20, "\(running.output)")
    let destroys = try await withThrowingTaskGroup(of: Int32.self) { group in
      for name in names { group.addTask { try await harness.ctl(["destroy", name]).status } }
      return try await group.reduce(into: [Int32]()) { $0.append($1) }
    }
    #expect(destroys.allSatisfy { $0 == 0 }, "\(destroys)")
    #expect(try await harness.ctl(["list", "--name"]).output == "\n")

    async let first = harness.ctl(["start", "c1"])
    async let second = harness.ctl(["start", "c1"])
    let results = try await [first, second]
    #expect(results.filter { $0.status == 0 }.count == 1, "\(results.map(\.errors))")
    let loser = try #require(results.first { $0.status != 0 })
    #expect(loser.errors.contains("busy") || loser.errors.contains("already active"), "\(loser.errors)")
    expectSuccess(try await harness.ctl(["destroy", "c1"]), "destroy")
  }

  @Test("Bad input: hostile XML, duplicates, missing disks, templates, transient domains, the read-only socket")
  func badInput() async throws {
    let harness = try ManagementHarness()
    try harness.startDaemon()
    let socketMode = try FileManager.default.attributesOfItem(atPath: harness.socket)[.posixPermissions] as? Int
    #expect(socketMode == 0o600)
    // Another user gets in neither socket.
    if getuid() == 0, FileManager.default.isExecutableFile(atPath: "/usr/sbin/runuser") {
      for socket in [harness.socket, harness.readOnlySocket] {
        let other = try await ChildProcess.run(
          URL(fileURLWithPath: "/usr/sbin/runuser"),
          [
            "-u", "nobody", "--", ManagementHarness.binaries.appendingPathComponent("skvm-ctl").path, "-c", socket,
            "list",
          ])
        #expect(other.status == 1 && other.errors.contains("permission denied"), "\(other.errors)")
      }
    }

    let bomb = harness.directory.appendingPathComponent("bomb.xml")
    try Data("<!DOCTYPE d [<!ENTITY a 'aaaa'><!ENTITY b '&a;&a;&a;'>]><domain><name>&b;</name></domain>".utf8).write(
      to: bomb)
    let hostile = try await harness.ctl(["define", bomb.path])
    #expect(hostile.status == 1 && hostile.errors.contains("DOCTYPE"), "\(hostile.errors)")
    let unknown = try harness.writeDefinition("odd", devices: "<video/>")
    let odd = try await harness.ctl(["define", unknown])
    #expect(
      odd.status == 1 && odd.errors.contains("<video>") && odd.errors.contains("unknown element"), "\(odd.errors)")

    let file = try harness.writeDefinition("beta")
    expectSuccess(try await harness.ctl(["define", file]), "define")
    // The same name again without its UUID is another domain: refused, as libvirt does.
    let duplicate = try await harness.ctl(["define", file])
    #expect(
      duplicate.status == 1 && duplicate.errors.contains("domain 'beta' already exists with uuid"),
      "\(duplicate.errors)")
    // dumpxml's output (with the UUID) redefines it.
    let dumped = harness.directory.appendingPathComponent("beta-dumped.xml")
    try Data(try await harness.ctl(["dumpxml", "beta"]).output.utf8).write(to: dumped)
    expectSuccess(try await harness.ctl(["define", dumped.path]), "redefine from dumpxml")
    let noDisk = try harness.writeDefinition(
      "gamma", devices: "<disk type='file'><source file='/nonexistent/disk.qcow2'/><target dev='vda'/></disk>")
    let warned = try await harness.ctl(["define", noDisk])
    #expect(warned.status == 0 && warned.errors.contains("/nonexistent/disk.qcow2 does not exist"), "\(warned.errors)")
    let failed = try await harness.ctl(["start", "gamma"])
    #expect(failed.status == 1 && failed.errors.contains("/nonexistent/disk.qcow2"), "\(failed.errors)")
    #expect(try await state(harness, "gamma") == "shut off (unknown)")

    expectSuccess(try await harness.ctl(["template", "beta"]), "template")
    let template = try await harness.ctl(["start", "beta"])
    #expect(template.status == 1 && template.errors.contains("is a template"), "\(template.errors)")
    expectSuccess(try await harness.ctl(["template", "--disable", "beta"]), "template --disable")

    // Read-only: queries work, changes are refused.
    #expect(try await harness.ctl(["list", "--all"], readOnly: true).output.contains("beta"))
    let refused = try await harness.ctl(["start", "beta"], readOnly: true)
    #expect(refused.status == 1 && refused.errors.contains("read-only"), "\(refused.errors)")

    // Transient: create runs it; it is forgotten when it stops.
    let transient = try harness.writeDefinition("delta")
    let created = try await harness.ctl(["create", transient])
    #expect(created.output == "Domain 'delta' created from \(transient)\n", "\(created.errors)")
    #expect(try await harness.ctl(["dominfo", "delta"]).output.contains("Persistent:     no"))
    expectSuccess(try await harness.ctl(["destroy", "delta"]), "destroy transient")
    #expect(try await harness.ctl(["dominfo", "delta"]).status == 1)

    // Undefining a running domain makes it transient; it runs on until destroyed.
    expectSuccess(try await harness.ctl(["start", "beta"]), "start")
    expectSuccess(try await harness.ctl(["undefine", "beta"]), "undefine running")
    #expect(try await state(harness, "beta") == "running (booted)")
    expectSuccess(try await harness.ctl(["destroy", "beta"]), "destroy")
    #expect(try await harness.ctl(["list", "--all", "--name"]).output.contains("beta") == false)

    let invalidName = try await harness.ctl(["start", "no/such"])
    #expect(invalidName.status == 1 && invalidName.errors.contains("failed to get domain"), "\(invalidName.errors)")
  }

  @Test("The API answers as its OpenAPI document says (schemathesis: no 5xx, conforming statuses and bodies)")
  func apiConformsToItsDocument() async throws {
    let harness = try ManagementHarness()
    try harness.startDaemon()
    expectSuccess(try await harness.ctl(["define", try harness.writeDefinition("alpha")]), "define")
    let python = MonitorGuestTests.python
    let schemathesis = URL(fileURLWithPath: python).deletingLastPathComponent().appendingPathComponent("schemathesis")
    guard FileManager.default.isExecutableFile(atPath: schemathesis.path) else {
      Issue.record("no \(schemathesis.path): run scripts/setup --api-fuzzer (it installs schemathesis)")
      return
    }
    let root = ProbeBuilder.repositoryRoot
    let result = try await ChildProcess.run(
      URL(fileURLWithPath: python),
      [
        root.appendingPathComponent("Tests/Management/api_fuzz.py").path, "--socket", harness.socket, "--spec",
        root.appendingPathComponent("Management/openapi.yaml").path, "--examples", "25",
      ], mergeErrors: true)
    #expect(result.status == 0, "\(result.output.suffix(6000))")
    #expect(harness.daemon?.isRunning == true, "skvmd survived: \(harness.daemonLog.suffix(2000))")
    expectSuccess(try await harness.ctl(["list", "--all"]), "list after the fuzzing")
  }

  func waitForShutOff(_ harness: ManagementHarness, _ domain: String, seconds: Double = 120) async throws -> String {
    let deadline = Date().addingTimeInterval(seconds)
    var current = ""
    while Date() < deadline {
      current = try await state(harness, domain)
      if current.hasPrefix("shut off") { return current }
      try await Task.sleep(for: .milliseconds(100))
    }
    return current
  }

  func qemuImg(_ arguments: [String]) throws -> ChildProcess.Result {
    try ChildProcess.run(URL(fileURLWithPath: "/usr/bin/qemu-img"), arguments)
  }

  @Test("clone and clone --linked of a template: new identity, copies that boot, the template's image untouched")
  func clones() async throws {
    let harness = try ManagementHarness()
    try harness.startDaemon()
    let raw = harness.directory.appendingPathComponent("pattern.raw")
    try Data((0..<(1 << 20)).map { UInt8(truncatingIfNeeded: ($0 / 512) * 7 + 1) }).write(to: raw)
    let base = harness.directory.appendingPathComponent("golden.qcow2").path
    expectSuccess(try qemuImg(["convert", "-O", "qcow2", raw.path, base]), "qemu-img convert")
    let probe = harness.directory.appendingPathComponent("virtio_blk.bin")
    try Data(try ProbeBuilder.binary("virtio_blk")).write(to: probe)
    let xml = harness.directory.appendingPathComponent("golden.xml")
    try Data(
      """
      <domain type='kvm' xmlns:skvm='https://swiftkvm.dev/schemas/domain/1.0'>
        <name>golden</name>
        <memory unit='MiB'>64</memory>
        <os><type>hvm</type><skvm:flat entry='long'>\(probe.path)</skvm:flat></os>
        <devices>
          <disk type='file' device='disk'><driver name='qemu' type='qcow2'/><source file='\(base)'/><target dev='vda'/></disk>
          <interface type='user'><mac address='52:54:00:aa:bb:cc'/></interface>
        </devices>
      </domain>
      """.utf8
    ).write(to: xml)
    expectSuccess(try await harness.ctl(["define", xml.path]), "define")
    expectSuccess(try await harness.ctl(["template", "golden"]), "template")
    let before = try Data(contentsOf: URL(fileURLWithPath: base))

    let full = try await harness.ctl(["clone", "golden", "full1"])
    let fullImage = harness.directory.appendingPathComponent("full1.qcow2").path
    #expect(full.output == "Allocating '\(fullImage)'\nClone 'full1' created successfully.\n", "\(full.errors)")
    #expect(try qemuImg(["compare", base, fullImage]).status == 0, "a full copy reads the same")
    let linked = try await harness.ctl(["clone", "--linked", "golden", "linked1"])
    expectSuccess(linked, "clone --linked")
    let linkedImage = harness.directory.appendingPathComponent("linked1.qcow2").path
    let info = try qemuImg(["info", "-U", linkedImage]).output
    #expect(info.contains("backing file: \(base)"), "\(info)")

    let disks = try await harness.ctl(["domblklist", "golden"]).output
    #expect(disks.contains(" Target   Source") && disks.contains(" vda      \(base)"), "\(disks)")
    let interfaces = try await harness.ctl(["domiflist", "golden"]).output
    #expect(interfaces.contains(" -           user   -        virtio   52:54:00:aa:bb:cc"), "\(interfaces)")
    let templateXML = try await harness.ctl(["dumpxml", "golden"]).output
    let cloneXML = try await harness.ctl(["dumpxml", "linked1"]).output
    #expect(cloneXML.contains("<name>linked1</name>") && cloneXML.contains(linkedImage))
    #expect(!cloneXML.contains("52:54:00:aa:bb:cc"), "a new MAC address")
    let uuid = { (text: String) in text.components(separatedBy: "<uuid>").last?.prefix(36) }
    #expect(uuid(templateXML) != uuid(cloneXML), "a new UUID")

    // Both clones boot: the probe reads the template's pattern through them and writes its own.
    for name in ["linked1", "full1"] {
      expectSuccess(try await harness.ctl(["start", name]), "start \(name)")
      _ = try await waitForShutOff(harness, name)
      let log = harness.domainLog(name)
      #expect(log.contains("read sector 10 (host pattern)") && log.contains("write 8 sectors"), "\(name): \(log)")
    }
    #expect(try Data(contentsOf: URL(fileURLWithPath: base)) == before, "the template's image is untouched")
    #expect(try qemuImg(["check", base]).status == 0)
    #expect(try qemuImg(["check", linkedImage]).status == 0)
    #expect(try qemuImg(["compare", base, linkedImage]).status == 1, "the linked clone's writes are its own")
    #expect(try qemuImg(["compare", base, fullImage]).status == 1, "the full clone's writes are its own")
    let written = try await ChildProcess.run(
      URL(fileURLWithPath: "/usr/bin/qemu-io"), ["-f", "qcow2", "-r", "-c", "read -P 0xa5 102400 4096", linkedImage])
    #expect(written.output.contains("read 4096/4096"), "\(written.output)\(written.errors)")

    let taken = try await harness.ctl(["clone", "golden", "full1"])
    #expect(taken.status == 1 && taken.errors.contains("already exists"), "\(taken.errors)")
    let started = try await harness.ctl(["start", "golden"])
    #expect(started.status == 1 && started.errors.contains("is a template"))
  }

  @Test("console: a domain's serial console from a pipe; Ctrl-] detaches, the guest runs on; one client at a time")
  func console() async throws {
    let harness = try ManagementHarness()
    try harness.startDaemon()
    let probe = harness.directory.appendingPathComponent("echo.bin")
    try Data(try ProbeBuilder.binary("console_echo")).write(to: probe)
    let xml = harness.directory.appendingPathComponent("echo.xml")
    try Data(
      """
      <domain xmlns:skvm='https://swiftkvm.dev/schemas/domain/1.0'><name>echo</name><memory unit='MiB'>32</memory>
      <os><skvm:flat entry='long'>\(probe.path)</skvm:flat></os></domain>
      """.utf8
    ).write(to: xml)
    expectSuccess(try await harness.ctl(["define", xml.path]), "define")
    expectSuccess(try await harness.ctl(["start", "echo"]), "start")
    defer { _ = harness.ctlSync(["destroy", "echo"]) }
    let deadline = Date().addingTimeInterval(30)
    while !harness.domainLog("echo").contains("echo: ready") && Date() < deadline {
      try await Task.sleep(for: .milliseconds(50))
    }
    let session = try await harness.ctl(["console", "echo"], input: Array("hello there\n".utf8), linger: 1.5)
    #expect(session.status == 0)
    #expect(
      session.output.contains("Connected to domain 'echo'") && session.output.contains("echo: hello there"),
      "\(session.output)")
    #expect(harness.domainLog("echo").contains("echo: hello there"), "the log has it too")

    let detached = try await harness.ctl(["console", "echo"], input: Array("abc\u{1D}".utf8), linger: 0.5)
    #expect(detached.status == 0, "\(detached.output)")
    #expect(try await state(harness, "echo") == "running (booted)")

    // Someone holds the console (a plain connection to its socket): a second client is told so.
    let uuid = try await harness.ctl(["domuuid", "echo"]).output.trimmingCharacters(in: .whitespacesAndNewlines)
    let holder = try ManagementHarness.connectUnix(
      harness.directory.appendingPathComponent("run/domains/\(uuid).console").path)
    let second = try await harness.ctl(["console", "echo"], input: [], linger: 0.2)
    #expect(second.output.contains("in use by another client"), "\(second.output)")
    close(holder)
    try await Task.sleep(for: .milliseconds(200))

    _ = try await harness.ctl(["console", "echo"], input: Array("\nquit\n".utf8), linger: 0.5)
    #expect(try await waitForShutOff(harness, "echo", seconds: 30).hasPrefix("shut off"))
    let notRunning = try await harness.ctl(["console", "echo"])
    #expect(notRunning.status == 1 && notRunning.errors.contains("is not running"), "\(notRunning.errors)")
  }

  @Test("on_reboot: restart starts a guest that resets again (it stays running); destroy shuts it off after one boot")
  func onReboot() async throws {
    let harness = try ManagementHarness()
    try harness.startDaemon()
    // Real mode: print "boot", then reset through the i8042 (out 0x64, 0xFE).
    let code: [UInt8] = [
      0xBA, 0xF8, 0x03, 0xB0, 0x62, 0xEE, 0xB0, 0x6F, 0xEE, 0xEE, 0xB0, 0x74, 0xEE, 0xB0, 0x0A, 0xEE, 0xB0, 0xFE, 0xE6,
      0x64, 0xF4, 0xEB, 0xFD,
    ]
    let guest = harness.directory.appendingPathComponent("reset.bin")
    try Data(code).write(to: guest)
    for (name, action) in [("looping", "restart"), ("once", "destroy")] {
      let xml = harness.directory.appendingPathComponent("\(name).xml")
      try Data(
        """
        <domain xmlns:skvm='https://swiftkvm.dev/schemas/domain/1.0'><name>\(name)</name><memory unit='MiB'>16</memory>
        <os><skvm:flat>\(guest.path)</skvm:flat></os><on_reboot>\(action)</on_reboot></domain>
        """.utf8
      ).write(to: xml)
      expectSuccess(try await harness.ctl(["define", xml.path]), "define \(name)")
      expectSuccess(try await harness.ctl(["start", name]), "start \(name)")
    }
    let deadline = Date().addingTimeInterval(60)
    func boots(_ name: String) -> Int { harness.domainLog(name).components(separatedBy: "boot\n").count - 1 }
    while boots("looping") < 3 && Date() < deadline { try await Task.sleep(for: .milliseconds(50)) }
    #expect(boots("looping") >= 3, "\(harness.domainLog("looping"))")
    #expect(try await waitForShutOff(harness, "once", seconds: 30) == "shut off (shutdown)")
    #expect(boots("once") == 1)
    // A restart may be under way (busy) when destroy comes: as a user would, try again.
    var destroyed = false
    for _ in 0..<50 where !destroyed {
      let result = try await harness.ctl(["destroy", "looping"])
      destroyed = result.status == 0
      if !destroyed {
        #expect(result.errors.contains("busy") || result.errors.contains("not running"), "\(result.errors)")
        try await Task.sleep(for: .milliseconds(100))
      }
    }
    #expect(destroyed)
    #expect(try await state(harness, "looping") == "shut off (destroyed)")
  }

  @Test(
    "vcpupin: the definition's pins apply at start; a live pin moves a vCPU thread; --config changes the definition",
    .enabled(if: ProcessInfo.processInfo.activeProcessorCount >= 2))
  func vcpupin() async throws {
    let harness = try ManagementHarness()
    try harness.startDaemon()
    let file = try harness.writeDefinition(
      "pinned", extra: "<vcpu>2</vcpu><cputune><vcpupin vcpu='1' cpuset='0'/></cputune>")
    expectSuccess(try await harness.ctl(["define", file]), "define")
    let all = "0-\(ProcessInfo.processInfo.activeProcessorCount - 1)"
    var shown = try await harness.ctl(["vcpupin", "pinned"])
    #expect(shown.output.contains(" 0      \(all)") && shown.output.contains(" 1      0"), "\(shown.output)")
    expectSuccess(try await harness.ctl(["start", "pinned"]), "start")
    shown = try await harness.ctl(["vcpupin", "pinned"])
    #expect(shown.output.contains(" 1      0\n"), "the definition's pin applies at start: \(shown.output)")
    let pinned = try await harness.ctl(["vcpupin", "pinned", "0", "1", "--live"])
    #expect(pinned.output.contains(" 0      1\n"), "\(pinned.output)\(pinned.errors)")
    // The thread itself says so.
    let pid = try #require(harness.vmmPid("pinned"))
    let tasks = try FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/task")
    let allowed = tasks.compactMap { try? String(contentsOfFile: "/proc/\(pid)/task/\($0)/status", encoding: .utf8) }
      .filter { $0.contains("Name:\tvcpu") }
      .compactMap { $0.split(separator: "\n").first { $0.hasPrefix("Cpus_allowed_list:") } }
    #expect(allowed.count == 2 && allowed.allSatisfy { $0.hasSuffix("\t0") || $0.hasSuffix("\t1") }, "\(allowed)")
    let bad = try await harness.ctl(["vcpupin", "pinned", "0", "99"])
    #expect(bad.status == 1 && bad.errors.contains("not a list of this host's CPUs"), "\(bad.errors)")
    let noSuch = try await harness.ctl(["vcpupin", "pinned", "5", "0"])
    #expect(noSuch.status == 1 && noSuch.errors.contains("vCPU 5"), "\(noSuch.errors)")
    expectSuccess(try await harness.ctl(["destroy", "pinned"]), "destroy")
    expectSuccess(try await harness.ctl(["vcpupin", "pinned", "0", "1", "--config"]), "--config")
    #expect(try await harness.ctl(["dumpxml", "pinned"]).output.contains("<vcpupin vcpu='0' cpuset='1'/>"))
  }
}
