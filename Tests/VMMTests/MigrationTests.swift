import Foundation
import Testing

/// Live migration of a running probe guest between skvm processes on this host
/// (Tests/Snapshots/migrate_check.py): hops in a row with RAM rewritten and block I/O going on,
/// a cancel, a destination killed mid-way — the guest carries on each time.
@Suite("Live migration", .serialized)
struct MigrationTests {
  static func check(cpus: Int, hops: Int) async throws -> (status: Int32, output: String) {
    let python = MonitorGuestTests.python
    guard FileManager.default.isExecutableFile(atPath: python) else {
      Issue.record("no \(python): run scripts/setup (it installs the qemu.qmp client)")
      return (-1, "")
    }
    let probe = FileManager.default.temporaryDirectory.appendingPathComponent("skvm-migrate-\(UUID().uuidString).bin")
    try Data(try ProbeBuilder.binary("snapshot_workload")).write(to: probe)
    defer { try? FileManager.default.removeItem(at: probe) }
    let result = try await ChildProcess.run(
      URL(fileURLWithPath: python),
      [
        ProbeBuilder.repositoryRoot.appendingPathComponent("Tests/Snapshots/migrate_check.py").path,
        "--skvm", CommandLineTests.executable.path, "--probe", probe.path, "--cpus", String(cpus),
        "--hops", String(hops),
      ], mergeErrors: true)
    print(String(result.output.split(separator: "\n").last ?? ""))
    return (result.status, result.output)
  }

  @Test(
    "Three hops in a row with 2 vCPUs (pages rewritten and block I/O during pre-copy), a cancel and a killed destination: the guest carries on"
  )
  func hops() async throws {
    // The real-KVM lane (an emulated machine) runs fewer: SKVM_MIGRATION_HOPS.
    let hops = Int(ProcessInfo.processInfo.environment["SKVM_MIGRATION_HOPS"] ?? "") ?? 3
    let result = try await Self.check(cpus: 2, hops: hops)
    #expect(result.status == 0 && result.output.contains("migrate_check: ok"), "\(result.output)")
  }
}
