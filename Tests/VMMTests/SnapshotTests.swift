import Foundation
import Testing

/// Snapshots of running probe guests: saved with QMP migrate to file:, restored in a new
/// process with --incoming file:, again and again; and snapshot files that are damaged or
/// belong to another machine, refused with one line before any vCPU runs.
@Suite("Snapshots", .serialized)
struct SnapshotTests {
  static func check(cpus: Int, cycles: Int, mode: String = "mapped", scenario: String = "cycles") async throws -> (
    status: Int32, output: String
  ) {
    let python = MonitorGuestTests.python
    guard FileManager.default.isExecutableFile(atPath: python) else {
      Issue.record("no \(python): run scripts/setup (it installs the qemu.qmp client)")
      return (-1, "")
    }
    let probe = FileManager.default.temporaryDirectory.appendingPathComponent("skvm-workload-\(UUID().uuidString).bin")
    try Data(try ProbeBuilder.binary("snapshot_workload")).write(to: probe)
    defer { try? FileManager.default.removeItem(at: probe) }
    let result = try await ChildProcess.run(
      URL(fileURLWithPath: python),
      [
        ProbeBuilder.repositoryRoot.appendingPathComponent("Tests/Snapshots/snapshot_check.py").path,
        "--skvm", CommandLineTests.executable.path, "--probe", probe.path, "--cpus", String(cpus),
        "--cycles", String(cycles), "--mode", mode, "--run-seconds", "0.05", "--scenario", scenario,
      ], mergeErrors: true)
    print(result.output.split(separator: "\n").last ?? "")
    return (result.status, result.output)
  }

  @Test("50 save/restore cycles in a row: counter, timer interrupts, virtio-blk queue positions, serial carry on")
  func fiftyCycles() async throws {
    // The real-KVM lane (an emulated machine) runs fewer: SKVM_SNAPSHOT_CYCLES.
    let cycles = Int(ProcessInfo.processInfo.environment["SKVM_SNAPSHOT_CYCLES"] ?? "") ?? 50
    let result = try await Self.check(cpus: 1, cycles: cycles)
    #expect(result.status == 0 && result.output.contains("snapshot_check: ok"), "\(result.output)")
  }

  @Test("With 2 and 4 vCPUs, mapped and copied (the copied snapshot is deleted while the guest runs)")
  func smp() async throws {
    for (cpus, mode) in [(2, "mapped"), (4, "copy")] {
      let result = try await Self.check(cpus: cpus, cycles: 5, mode: mode)
      #expect(result.status == 0 && result.output.contains("snapshot_check: ok"), "\(cpus) vCPUs: \(result.output)")
    }
  }

  @Test(
    "Internal snapshots: snapshot-save/-load jobs, savevm/loadvm/delvm, --loadvm; qemu-img lists them with a VM size and checks clean",
    .enabled(if: FileManager.default.isExecutableFile(atPath: "/usr/bin/qemu-img"), "needs qemu-img"))
  func internalSnapshots() async throws {
    let result = try await Self.check(cpus: 2, cycles: 1, scenario: "savevm")
    #expect(result.status == 0 && result.output.contains("snapshot_check: ok"), "\(result.output)")
  }

  @Test("savevm with a writable raw disk is refused, saying how to convert it; the guest runs on")
  func rawDiskRefusesSavevm() async throws {
    let directory = try ImgCommandTests.scratch()
    defer { try? FileManager.default.removeItem(atPath: directory) }
    let disk = directory + "/disk.raw"
    #expect(FileManager.default.createFile(atPath: disk, contents: Data(count: 1 << 20)))
    let probe = directory + "/busy.bin"
    try Data(try ProbeBuilder.binary("busy")).write(to: URL(fileURLWithPath: probe))
    let socket = directory + "/qmp.sock"
    let process = Process()
    process.executableURL = CommandLineTests.executable
    process.arguments = ["run", "--flat", probe, "--flat-entry", "long", "--disk", disk, "--qmp", "unix:\(socket)"]
    process.standardOutput = FileHandle.nullDevice
    try process.run()
    let started = Date()
    while !FileManager.default.fileExists(atPath: socket) && Date().timeIntervalSince(started) < 20 { usleep(2000) }
    let reply = try await ChildProcess.run(
      CommandLineTests.executable, ["monitor", socket, "-c", "savevm x", "-c", "info status", "-c", "quit"])
    process.waitUntilExit()
    #expect(reply.output.contains("is not qcow2") && reply.output.contains("skvm img convert"), "\(reply.output)")
    #expect(reply.output.contains("VM status: running"), "\(reply.output)")
  }

  /// Saves the workload probe with a 1 MiB disk and returns (snapshot path, disk path, directory).
  static func savedWorkload() throws -> (snapshot: String, disk: String, directory: String) {
    let directory = try ImgCommandTests.scratch()
    let probe = directory + "/workload.bin"
    try Data(try ProbeBuilder.binary("snapshot_workload")).write(to: URL(fileURLWithPath: probe))
    let disk = directory + "/disk.raw"
    #expect(FileManager.default.createFile(atPath: disk, contents: Data(count: 1 << 20)))
    let socket = directory + "/qmp.sock"
    let snapshot = directory + "/machine.snap"
    let process = Process()
    process.executableURL = CommandLineTests.executable
    process.arguments = [
      "run", "--flat", probe, "--flat-entry", "long", "--cpus", "2", "--disk", disk, "--qmp", "unix:\(socket)",
      "--console", "none",
    ]
    try process.run()
    let started = Date()
    while !FileManager.default.fileExists(atPath: socket) && Date().timeIntervalSince(started) < 20 { usleep(2000) }
    usleep(200_000)
    let saved = try ChildProcess.run(
      CommandLineTests.executable, ["monitor", socket, "-c", "migrate \"file:\(snapshot)\"", "-c", "info migrate"])
    var waited = 0
    while !FileManager.default.fileExists(atPath: snapshot) && waited < 200 {
      usleep(20_000)
      waited += 1
    }
    _ = try ChildProcess.run(CommandLineTests.executable, ["monitor", socket, "-c", "quit"])
    process.waitUntilExit()
    #expect(FileManager.default.fileExists(atPath: snapshot), "migrate wrote the snapshot: \(saved.output)")
    return (snapshot, disk, directory)
  }

  @Test("Damaged or mismatched snapshot files: one clear line each, status 1, no vCPU runs")
  func hostileFiles() async throws {
    let (snapshot, disk, directory) = try Self.savedWorkload()
    defer { try? FileManager.default.removeItem(atPath: directory) }
    // Variants are sparse copies patched in place: a full copy of 256 MiB of RAM each would
    // not fit the real-KVM lane's /tmp.
    func variant(_ name: String, length: UInt64? = nil, patch: [(offset: UInt64, byte: (UInt8) -> UInt8)] = [])
      throws -> String
    {
      let path = directory + "/" + name
      let copied = try ChildProcess.run(URL(fileURLWithPath: "/bin/cp"), ["--sparse=always", snapshot, path])
      guard copied.status == 0 else { throw POSIXError(.EIO) }
      let handle = try FileHandle(forUpdating: URL(fileURLWithPath: path))
      defer { try? handle.close() }
      if let length { try handle.truncate(atOffset: length) }
      for (offset, change) in patch {
        try handle.seek(toOffset: offset)
        let old = try handle.read(upToCount: 1)?.first ?? 0
        try handle.seek(toOffset: offset)
        try handle.write(contentsOf: Data([change(old)]))
      }
      return path
    }
    let cases: [(String, [String], String)] = [
      (
        "truncated", ["--incoming", "file:" + (try variant("truncated.snap", length: 1 << 20))], "truncated"
      ),
      (
        "short", ["--incoming", "file:" + (try variant("short.snap", length: 100))], "shorter than a header"
      ),
      (
        "corrupted state",
        ["--incoming", "file:" + (try variant("corrupt.snap", patch: [(4096 + 40, { $0 ^ 0x20 })]))], "checksum"
      ),
      (
        "wrong version", ["--incoming", "file:" + (try variant("version.snap", patch: [(8, { _ in 9 })]))],
        "format version 9"
      ),
      ("not a snapshot", ["--incoming", "file:" + disk], "no SKVMSNAP magic"),
      ("other memory size", ["--incoming", "file:\(snapshot)", "--memory", "512M"], "--memory"),
      ("other vCPU count", ["--incoming", "file:\(snapshot)", "--cpus", "4"], "--cpus"),
      ("other disks", ["--incoming", "file:\(snapshot)", "--disk", directory + "/workload.bin"], "--disk"),
      ("missing file", ["--incoming", "file:" + directory + "/nothing.snap"], "cannot open the snapshot"),
      ("bad URI", ["--incoming", "ftp:somewhere"], "receives a migration on tcp:[HOST]:PORT"),
      ("defer without a monitor", ["--incoming", "defer"], "give a monitor with --qmp"),
      ("bad port", ["--incoming", "tcp:localhost:99999"], "port 99999 is not a TCP port"),
      ("bad host", ["--incoming", "tcp:no.such.host:4444"], "expected tcp:[IPv4 ADDRESS]:PORT"),
    ]
    for (name, arguments, expected) in cases {
      let result = try RedTeamTests.skvm(["run"] + arguments)
      #expect(
        (result.status == 1 || result.status == 64) && result.errors.contains(expected)
          && !result.output.contains("beat"),
        "\(name): status \(result.status): \(result.errors)")
    }
    try FileManager.default.removeItem(atPath: disk)
    let missingDisk = try RedTeamTests.skvm(["run", "--incoming", "file:\(snapshot)"])
    #expect(missingDisk.status == 1 && missingDisk.errors.contains(disk), "missing disk: \(missingDisk.errors)")
  }
}
