import Foundation
import Testing

@testable import DiskImage

/// Images created and written by us: the bytes read back match a plain mirror, and the
/// real qemu-img finds no errors, no leaks, and the same contents.
@Suite("qcow2 images written by SwiftKVM", .enabled(if: Oracle.available, "needs qemu-img (Debian qemu-utils)"))
struct QCow2WriteTests {
  struct SeededGenerator: RandomNumberGenerator {
    var state: UInt64
    mutating func next() -> UInt64 {
      state = state &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
      return state ^ (state >> 29)
    }
  }

  static func check(_ path: String) throws {
    let report = try Oracle.run("qemu-img", ["check", "--output=json", path])
    let json = try #require(try JSONSerialization.jsonObject(with: Data(report.utf8)) as? [String: Any])
    #expect(json["corruptions"] == nil || json["corruptions"] as? Int == 0, "\(report)")
    #expect(json["leaks"] == nil || json["leaks"] as? Int == 0, "\(report)")
    #expect(json["check-errors"] == nil || json["check-errors"] as? Int == 0, "\(report)")
  }

  @Test(
    "Random writes, zero-writes and discards of random sizes, mirrored in memory, read back the same, reopened, and pass qemu-img check",
    arguments: [
      (4096, "1.1", UInt32(16)), (65536, "1.1", UInt32(1)), (65536, "0.10", UInt32(16)), (512, "1.1", UInt32(64)),
    ])
  func randomWrites(clusterSize: Int, compat: String, refcountBits: UInt32) throws {
    let directory = try Oracle.scratch()
    defer { try? FileManager.default.removeItem(at: directory) }
    let path = directory.appendingPathComponent("model.qcow2").path
    let size = 16 << 20
    var options = QCow2CreateOptions(size: UInt64(size))
    options.clusterSize = UInt64(clusterSize)
    options.compat = compat
    options.refcountBits = refcountBits
    let image = try QCow2Image.create(at: path, options: options)
    var mirror = [UInt8](repeating: 0, count: size)
    var random = SeededGenerator(state: UInt64(clusterSize) ^ UInt64(refcountBits))
    for round in 0..<1500 {
      let length = Int.random(in: 1...(round % 10 == 0 ? 300_000 : 9000), using: &random)
      let offset = Int.random(in: 0...(size - length), using: &random)
      switch Int.random(in: 0..<20, using: &random) {
      case 0..<3:
        try image.writeZeroes(at: UInt64(offset), length: UInt64(length))
        mirror.replaceSubrange(offset..<offset + length, with: repeatElement(0, count: length))
      case 3..<6:
        try image.discard(at: UInt64(offset), length: UInt64(length))
        mirror.replaceSubrange(offset..<offset + length, with: repeatElement(0, count: length))
      default:
        let value = UInt8(truncatingIfNeeded: round + 1)
        let bytes = (0..<length).map { value &+ UInt8(truncatingIfNeeded: $0 >> 9) }
        try image.write(bytes, at: UInt64(offset))
        mirror.replaceSubrange(offset..<offset + length, with: bytes)
      }
      if round % 150 == 0 {
        let probe = Int.random(in: 0...(size - 70_000), using: &random)
        #expect(try image.read(count: 70_000, at: UInt64(probe)) == Array(mirror[probe..<probe + 70_000]))
      }
    }
    try image.flush()
    #expect(try image.read(count: size, at: 0) == mirror)
    // Still open for writing here, so the reader looks with force-share (qemu-img's -U).
    let reopened = try DiskImage.open(path, forceShare: true)
    #expect(try reopened.read(count: size, at: 0) == mirror)
    // qemu-img, like skvm, will not look at an image another process has open for writing.
    image.close()
    try Self.check(path)
    #expect(try Oracle.rawContents(of: path) == Data(mirror))
  }

  @Test("Writes over a backing file and over a snapshot copy on write; the older layers stay as they were")
  func copyOnWrite() throws {
    let directory = try Oracle.scratch()
    defer { try? FileManager.default.removeItem(at: directory) }
    let base = directory.appendingPathComponent("base.qcow2").path
    try Oracle.run("qemu-img", ["create", "-q", "-f", "qcow2", base, "4M"])
    try Oracle.run("qemu-io", ["-f", "qcow2", "-c", "write -P 0x11 0 4M", base])
    let baseBefore = try Oracle.rawContents(of: base)
    var options = QCow2CreateOptions(size: 4 << 20)
    options.backingFile = "base.qcow2"
    options.backingFormat = .qcow2
    let top = directory.appendingPathComponent("top.qcow2").path
    let overlay = try QCow2Image.create(at: top, options: options)
    try overlay.write([UInt8](repeating: 0x22, count: 100), at: 70_000)
    try overlay.flush()
    // The overlay holds its backing file open (a shared lock): nothing may write that file
    // until it is closed — nor may QEMU look at the overlay while skvm writes it.
    #expect(performing: { _ = try DiskImage.open(base, writable: true) }, throws: { "\($0)".contains("in use") })
    #expect(
      performing: { try Oracle.run("qemu-io", ["-c", "write 0 512", base]) }, throws: { "\($0)".contains("lock") })
    #expect(performing: { try Oracle.run("qemu-img", ["info", top]) }, throws: { "\($0)".contains("lock") })
    overlay.close()
    var expected = [UInt8](repeating: 0x11, count: 4 << 20)
    expected.replaceSubrange(70_000..<70_100, with: [UInt8](repeating: 0x22, count: 100))
    #expect(try Oracle.rawContents(of: top) == Data(expected))
    #expect(try Oracle.rawContents(of: base) == baseBefore)
    try Self.check(top)
    let info = try Oracle.run("qemu-img", ["info", top])
    #expect(info.contains("backing file: base.qcow2") && info.contains("backing file format: qcow2"), "\(info)")

    // A snapshot made by qemu-img: our write must not change what the snapshot holds.
    try Oracle.run("qemu-img", ["snapshot", "-c", "before", base])
    let snapshotted = try #require(try DiskImage.open(base, writable: true) as? QCow2Image)
    try snapshotted.write([UInt8](repeating: 0x33, count: 5000), at: 1 << 20)
    try snapshotted.flush()
    snapshotted.close()
    try Self.check(base)
    try Oracle.run("qemu-img", ["snapshot", "-a", "before", base])
    #expect(try Oracle.rawContents(of: base) == baseBefore, "the snapshot still holds the old data")
  }
}
