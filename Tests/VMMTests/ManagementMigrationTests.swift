import Foundation
import Testing

/// `skvm ctl migrate` between two skvmd instances on this host, with a probe guest that keeps
/// state everywhere (memory it rewrites and checks, timer ticks, 2 vCPUs, virtio-blk I/O) and
/// prints a numbered beat: after each move the beats carry on from where they were.
@Suite("skvm ctl migrate")
struct ManagementMigrationTests {
  /// The beat numbers in a domain's log, in order.
  func beats(_ harness: ManagementHarness, _ name: String) -> [Int] {
    harness.domainLog(name).split(separator: "\n").compactMap { line in
      let words = line.split(separator: " ")
      guard words.count > 2, words[0] == "beat", words[2] == "counter" else { return nil }
      return Int(words[1])
    }
  }

  /// Waits until the domain's log shows `count` more beats than `after`; returns them all.
  func waitForBeats(_ harness: ManagementHarness, _ name: String, after: Int = 0, count: Int = 3) async throws -> [Int]
  {
    let deadline = Date().addingTimeInterval(60)
    while Date() < deadline {
      let seen = beats(harness, name)
      if seen.count >= after + count { return seen }
      try await Task.sleep(for: .milliseconds(50))
    }
    throw ManagementHarness.HarnessError(
      description: "no \(count) new beats of \(name) within 60 s; its log:\n\(harness.domainLog(name).suffix(2000))")
  }

  func state(_ harness: ManagementHarness, _ domain: String) async throws -> String {
    try await harness.ctl(["domstate", "--reason", domain]).output.trimmingCharacters(in: .whitespacesAndNewlines)
  }

  @Test(
    "live and paused moves there and back (one left suspended) keep the guest's state; failures leave it running where it was"
  )
  func migrateBetweenDaemons() async throws {
    let source = try ManagementHarness()
    let destination = try ManagementHarness()
    try source.startDaemon()
    try destination.startDaemon(["--incoming-timeout", "5"])
    let probe = source.directory.appendingPathComponent("workload.bin")
    try Data(try ProbeBuilder.binary("snapshot_workload")).write(to: probe)
    let disk = source.directory.appendingPathComponent("shared.img")
    try Data(count: 1 << 20).write(to: disk)
    let xml = source.directory.appendingPathComponent("wl.xml")
    try Data(
      """
      <domain type='kvm' xmlns:skvm='https://swiftkvm.dev/schemas/domain/1.0'>
        <name>wl</name>
        <memory unit='MiB'>64</memory>
        <vcpu>2</vcpu>
        <os><type>hvm</type><skvm:flat entry='long'>\(probe.path)</skvm:flat></os>
        <devices>
          <disk type='file' device='disk'>
            <driver name='qemu' type='raw'/><source file='\(disk.path)'/><target dev='vda' bus='virtio'/>
          </disk>
        </devices>
      </domain>
      """.utf8
    ).write(to: xml)
    #expect(try await source.ctl(["define", xml.path]).status == 0)
    #expect(try await source.ctl(["start", "wl"]).status == 0)
    let before = try await waitForBeats(source, "wl")
    let uuid = try await source.ctl(["domuuid", "wl"]).output.trimmingCharacters(in: .whitespacesAndNewlines)

    // Refused before anything moves: the same daemon; a listener address that is taken.
    let same = try await source.ctl(["migrate", "--live", "wl", source.socket])
    #expect(same.status == 1 && same.errors.contains("is the daemon the domain runs on"), "\(same.errors)")
    let taken = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    defer { close(taken) }
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_addr.s_addr = UInt32(0x7f00_0001).bigEndian
    var length = socklen_t(MemoryLayout<sockaddr_in>.size)
    _ = withUnsafePointer(to: &address) {
      $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(taken, $0, length) }
    }
    _ = listen(taken, 1)
    _ = withUnsafeMutablePointer(to: &address) {
      $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(taken, $0, &length) }
    }
    let port = Int(UInt16(bigEndian: address.sin_port))
    let busy = try await source.ctl(["migrate", "--live", "wl", destination.socket, "tcp:127.0.0.1:\(port)"])
    #expect(busy.status == 1 && busy.errors.contains("cannot receive 'wl'"), "\(busy.errors)")
    let nowhere = try await source.ctl(["migrate", "--live", "wl", source.directory.path + "/no-daemon"])
    #expect(nowhere.status == 1 && nowhere.errors.contains("the daemon is not running"), "\(nowhere.errors)")
    #expect(try await state(source, "wl") == "running (booted)")
    #expect(
      try await destination.ctl(["list", "--all", "--name"]).output.trimmingCharacters(in: .whitespacesAndNewlines)
        == "")

    // Live, defined at the destination, forgotten at the source.
    let live = try await source.ctl(["migrate", "--live", "--persistent", "--undefinesource", "wl", destination.socket])
    #expect(live.status == 0, "\(live.errors)\(live.output)\n\(source.domainLog("wl").suffix(1500))")
    #expect(try await state(destination, "wl") == "running (migrated)")
    #expect(try await destination.ctl(["domuuid", "wl"]).output.contains(uuid))
    #expect(try await destination.ctl(["dominfo", "wl"]).output.contains("Persistent:     yes"))
    #expect(!(try await source.ctl(["list", "--all", "--name"]).output.contains("wl")), "undefined at the source")
    let there = try await waitForBeats(destination, "wl")
    #expect(there.first! > before.last!, "the beats carry on (\(before) then \(there)), not a new boot")

    // Back, paused for the copy (no --live) and left paused (--suspend) until resumed; the
    // destination stays defined, shut off (migrated).
    let back = try await destination.ctl(["migrate", "--suspend", "wl", source.socket])
    #expect(back.status == 0, "\(back.errors)\(back.output)")
    #expect(try await state(source, "wl") == "paused (user)")
    #expect(try await source.ctl(["resume", "wl"]).status == 0)
    #expect(try await state(source, "wl") == "running (unpaused)")
    #expect(try await state(destination, "wl") == "shut off (migrated)")
    let home = beats(source, "wl").count
    let after = try await waitForBeats(source, "wl", after: home)
    #expect(after.last! > there.last!, "the beats carry on after the move back: \(there) then \(after)")
    for log in [source.domainLog("wl"), destination.domainLog("wl")] {
      #expect(!log.contains("FAIL"), "the workload found a page or a block that did not arrive:\n\(log.suffix(2000))")
    }
    // The transient domain at the source is gone once destroyed; the disk was never locked twice.
    #expect(try await source.ctl(["destroy", "wl"]).status == 0)
    #expect(!(try await source.ctl(["list", "--all", "--name"]).output.contains("wl")))

    // A destination prepared by a client that then vanished (no source ever connects) gives
    // up after --incoming-timeout.
    let request = """
      import json, socket, sys
      s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1])
      body = json.dumps({"xml": open(sys.argv[2]).read().replace("<name>wl<", "<name>orphan<")}).encode()
      head = "POST /v1/incoming-migrations HTTP/1.1\\r\\nHost: x\\r\\nContent-Type: application/json\\r\\n"
      head += "Content-Length: %d\\r\\nConnection: close\\r\\n\\r\\n" % len(body)
      s.sendall(head.encode() + body)
      print(s.makefile("rb").read().decode())
      """
    let prepared = try await ChildProcess.run(
      URL(fileURLWithPath: "/usr/bin/python3"), ["-c", request, destination.socket, xml.path])
    #expect(prepared.output.contains("201 Created") && prepared.output.contains("tcp:127.0.0.1:"), "\(prepared)")
    #expect(try await state(destination, "orphan") == "paused (migrating)")
    let deadline = Date().addingTimeInterval(30)
    while try await destination.ctl(["list", "--all", "--name"]).output.contains("orphan"), Date() < deadline {
      try await Task.sleep(for: .milliseconds(200))
    }
    #expect(!(try await destination.ctl(["list", "--all", "--name"]).output.contains("orphan")), "abandoned")
    #expect(destination.domainLog("orphan").contains("no migration source connected within 5 s"))
  }
}
