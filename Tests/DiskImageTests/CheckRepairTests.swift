import Foundation
import Testing

@testable import DiskImage

/// `check` against qemu-img on the corruptions a red-team run found it missing or misrepairing,
/// and hostile fields that must end in errors (the differential run over mutated images is in
/// `ImgCheckDifferentialTests`).
@Suite(
  "qcow2 check and repair against qemu-img", .serialized,
  .enabled(if: FileManager.default.isExecutableFile(atPath: "/usr/bin/qemu-img"), "needs qemu-img (qemu-utils)"))
struct CheckRepairTests {
  /// A qcow2 image made by qemu-img with data, a snapshot and data written after it.
  static func image(in directory: URL) throws -> String {
    let path = directory.appendingPathComponent("image.qcow2").path
    try Oracle.run("qemu-img", ["create", "-q", "-f", "qcow2", path, "4M"])
    try Oracle.run("qemu-io", ["-f", "qcow2", "-c", "write -P 0x11 0 192k", "-c", "write -P 0x22 1M 64k", path])
    try Oracle.run("qemu-img", ["snapshot", "-c", "first", path])
    try Oracle.run("qemu-io", ["-f", "qcow2", "-c", "write -P 0x33 0 64k", path])
    return path
  }

  static func edit(_ path: String, _ body: (inout [UInt8]) -> Void) throws {
    var bytes = [UInt8](try Data(contentsOf: URL(fileURLWithPath: path)))
    body(&bytes)
    try Data(bytes).write(to: URL(fileURLWithPath: path))
  }

  static func u64(_ bytes: [UInt8], _ at: Int) -> UInt64 { (0..<8).reduce(0) { $0 << 8 | UInt64(bytes[at + $1]) } }

  static func put64(_ bytes: inout [UInt8], _ at: Int, _ value: UInt64) {
    for index in 0..<8 { bytes[at + index] = UInt8(truncatingIfNeeded: value >> (56 - 8 * index)) }
  }

  /// qemu-img check's exit status for `path`.
  static func qemuVerdict(_ path: String) -> Int32 {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: "/usr/bin/qemu-img")
    process.arguments = ["check", "-q", path]
    process.standardOutput = FileHandle.nullDevice
    process.standardError = FileHandle.nullDevice
    try? process.run()
    process.waitUntilExit()
    return process.terminationStatus
  }

  /// Our check of `path`; the image is closed (its lock released) before this returns, not
  /// whenever ARC gets to it — the next check may want the lock exclusively.
  static func ourCheck(_ path: String, repair: QCow2Repair = .none) throws -> QCow2CheckResult {
    let image = try DiskImage.openForCheck(path, writable: repair != .none)
    defer { image.close() }
    return try image.check(repair: repair)
  }

  @Test("A refcount-table entry naming an unaligned block is corruption; -r all rebuilds the structure")
  func unalignedRefcountBlock() throws {
    let directory = try Oracle.scratch()
    defer { try? FileManager.default.removeItem(at: directory) }
    let path = try Self.image(in: directory)
    try Self.edit(path) { bytes in
      let table = Int(Self.u64(bytes, 48))
      Self.put64(&bytes, table, Self.u64(bytes, table) + 0x1000)
    }
    // qemu-img cannot even read the refcounts that block holds (exit 1, "check errors"); nor can we.
    #expect([1, 2].contains(Self.qemuVerdict(path)))
    let found = try Self.ourCheck(path)
    #expect(
      [1, 2].contains(found.exitStatus) && found.messages.contains { $0.contains("not cluster aligned") }, "\(found)")
    let repaired = try Self.ourCheck(path, repair: .all)
    #expect(repaired.exitStatus == 0, "\(repaired.messages)")
    #expect(Self.qemuVerdict(path) == 0, "qemu-img finds the repaired image clean")
  }

  @Test(
    "Every refcount-table entry naming the same block, and an L2 table placed on the refcount table: repaired as qemu-img repairs them"
  )
  func sharedStructures() throws {
    let directory = try Oracle.scratch()
    defer { try? FileManager.default.removeItem(at: directory) }
    for corruption in ["same block", "L2 on the refcount table"] {
      let path = try Self.image(in: directory)
      try Self.edit(path) { bytes in
        let table = Int(Self.u64(bytes, 48))
        if corruption == "same block" {
          let first = Self.u64(bytes, table)
          for index in 1..<8 { Self.put64(&bytes, table + 8 * index, first) }
        } else {
          let l1 = Int(Self.u64(bytes, 40))
          Self.put64(&bytes, l1, (1 << 63) | UInt64(table))
        }
      }
      #expect(Self.qemuVerdict(path) != 0, "\(corruption): qemu-img sees it")
      #expect(try Self.ourCheck(path).exitStatus == 2, "\(corruption): so do we")
      let copy = directory.appendingPathComponent("qemu-repaired.qcow2").path
      try? FileManager.default.removeItem(atPath: copy)
      try FileManager.default.copyItem(atPath: path, toPath: copy)
      _ = try? Oracle.run("qemu-img", ["check", "-q", "-r", "all", copy])
      let theirs = Self.qemuVerdict(copy)
      let repaired = try Self.ourCheck(path, repair: .all)
      if theirs == 0 {
        #expect(Self.qemuVerdict(path) == 0, "\(corruption): qemu-img's repair cleans it, so must ours: \(repaired)")
      }
      try FileManager.default.removeItem(atPath: path)
    }
  }

  @Test("Hostile header fields end in errors, never traps: backing name at 2^64-1, a snapshot's L1 near 2^64")
  func hostileFields() throws {
    let directory = try Oracle.scratch()
    defer { try? FileManager.default.removeItem(at: directory) }
    let backing = try Self.image(in: directory)
    try Self.edit(backing) { bytes in
      Self.put64(&bytes, 8, .max)
      bytes[19] = 16
    }
    #expect(performing: { _ = try DiskImage.open(backing) }, throws: { "\($0)".contains("backing file name") })
    try FileManager.default.removeItem(atPath: backing)

    let snapshot = try Self.image(in: directory)
    try Self.edit(snapshot) { bytes in
      let table = Int(Self.u64(bytes, 64))
      Self.put64(&bytes, table, 0xFFFF_FFFF_FFFF_0000)
      bytes.replaceSubrange(table + 8..<table + 12, with: [0, 0, 0x20, 0x01])
    }
    let image = try #require(try DiskImage.open(snapshot) as? QCow2Image)
    #expect(try image.snapshots.count == 1, "the table itself still reads")
    image.close()
    let found = try Self.ourCheck(snapshot)
    #expect(found.exitStatus == 2 && found.messages.contains { $0.contains("invalid L1 table") }, "\(found.messages)")
    let writable = try #require(try DiskImage.open(snapshot, writable: true) as? QCow2Image)
    #expect(performing: { try writable.applySnapshot("first") }, throws: { "\($0)".contains("invalid L1 table") })
  }

  @Test("A backing file name of 1,024 bytes is refused by rebase -u, as by create")
  func longBackingName() throws {
    let directory = try Oracle.scratch()
    defer { try? FileManager.default.removeItem(at: directory) }
    let path = try Self.image(in: directory)
    let image = try #require(try DiskImage.open(path, writable: true) as? QCow2Image)
    #expect(
      performing: { try image.setBacking(file: String(repeating: "b", count: 1024), format: .qcow2) },
      throws: { "\($0)".contains("1 to 1023 bytes") })
    image.close()
    #expect(try DiskImage.open(path).size == 4 << 20, "the image still opens")
  }

  @Test("A FIFO where an image is expected is refused at once, never waited on")
  func fifo() throws {
    let directory = try Oracle.scratch()
    defer { try? FileManager.default.removeItem(at: directory) }
    let fifo = directory.appendingPathComponent("fifo").path
    #expect(mkfifo(fifo, 0o600) == 0)
    for writable in [false, true] {
      #expect(
        performing: { _ = try DiskImage.open(fifo, writable: writable) },
        throws: { "\($0)".contains("not a regular file or block device") })
    }
  }
}
