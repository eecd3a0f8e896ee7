import Foundation
import Testing

@testable import DiskImage

/// Images made by qemu-img and qemu-io read back byte-identical to `qemu-img convert -O raw`.
@Suite("qcow2 images made by qemu-img", .enabled(if: Oracle.available, "needs qemu-img (Debian qemu-utils)"))
struct QCow2ReadTests {
  static let size = 8 << 20

  /// Writes a mix the reader must handle: data in several clusters, an unaligned write, zeros.
  static func fill(_ path: String, zeroWrites: Bool) throws {
    var commands = [
      "write -P 0xab 0 64k", "write -P 0xcd 1M 4k", "write -P 0x5a 3145216 1536", "write -P 0x77 7M 1M",
    ]
    if zeroWrites { commands += ["write -z 7M 64k", "write -z 4M 128k"] }
    for command in commands { try Oracle.run("qemu-io", ["-f", "qcow2", "-c", command, path]) }
  }

  static func ourContents(_ path: String) throws -> Data {
    let image = try DiskImage.open(path)
    var data = Data(count: Int(image.size))
    try data.withUnsafeMutableBytes { buffer in
      // Odd-sized reads across cluster boundaries.
      var offset = 0
      var step = 4096 + 512 + 7
      while offset < buffer.count {
        let count = min(step, buffer.count - offset)
        try image.read(
          into: UnsafeMutableRawBufferPointer(rebasing: buffer[offset..<offset + count]), at: UInt64(offset))
        offset += count
        step = step * 3 % 200_000 + 1
      }
    }
    return data
  }

  @Test(
    "v2 and v3, cluster sizes 4 KiB to 2 MiB, with data and zero writes",
    arguments: ["0.10", "1.1"], [4096, 65536, 2 << 20])
  func plain(compat: String, clusterSize: Int) throws {
    let directory = try Oracle.scratch()
    defer { try? FileManager.default.removeItem(at: directory) }
    let path = directory.appendingPathComponent("disk.qcow2").path
    try Oracle.run(
      "qemu-img", ["create", "-q", "-f", "qcow2", "-o", "compat=\(compat),cluster_size=\(clusterSize)", path, "8M"])
    try Self.fill(path, zeroWrites: true)
    let ours = try Self.ourContents(path)
    #expect(ours == (try Oracle.rawContents(of: path)))
    #expect(ours[0] == 0xab && ours[1 << 20] == 0xcd && ours[7 << 20] == 0)
  }

  @Test("Compressed clusters (qemu-img convert -c) inflate to the same bytes", arguments: [4096, 65536, 2 << 20])
  func compressed(clusterSize: Int) throws {
    let directory = try Oracle.scratch()
    defer { try? FileManager.default.removeItem(at: directory) }
    let source = directory.appendingPathComponent("source.qcow2").path
    let path = directory.appendingPathComponent("compressed.qcow2").path
    try Oracle.run("qemu-img", ["create", "-q", "-f", "qcow2", source, "8M"])
    try Self.fill(source, zeroWrites: false)
    try Oracle.run("qemu-img", ["convert", "-c", "-O", "qcow2", "-o", "cluster_size=\(clusterSize)", source, path])
    let image = try #require(try DiskImage.open(path) as? QCow2Image)
    #expect(try image.mapping(of: 0).isCompressed, "the first cluster is stored compressed")
    #expect(try Self.ourContents(path) == (try Oracle.rawContents(of: path)))
  }

  @Test("Backing chains (qcow2 over qcow2 over raw), relative names, with internal snapshots")
  func backingChain() throws {
    let directory = try Oracle.scratch()
    defer { try? FileManager.default.removeItem(at: directory) }
    let base = directory.appendingPathComponent("base.raw").path
    try Data((0..<Self.size).map { UInt8(truncatingIfNeeded: $0 &* 31 >> 9) }).write(to: URL(fileURLWithPath: base))
    let middle = directory.appendingPathComponent("middle.qcow2").path
    let top = directory.appendingPathComponent("top.qcow2").path
    try Oracle.run("qemu-img", ["create", "-q", "-f", "qcow2", "-b", "base.raw", "-F", "raw", middle])
    try Oracle.run("qemu-io", ["-f", "qcow2", "-c", "write -P 0x42 1M 256k", middle])
    try Oracle.run("qemu-img", ["snapshot", "-c", "first", middle])
    try Oracle.run("qemu-io", ["-f", "qcow2", "-c", "write -P 0x43 1152k 64k", middle])
    try Oracle.run("qemu-img", ["create", "-q", "-f", "qcow2", "-b", "middle.qcow2", "-F", "qcow2", top])
    try Oracle.run("qemu-io", ["-f", "qcow2", "-c", "write -z 0 64k", "-c", "write -P 0x44 6M 4k", top])
    let ours = try Self.ourContents(top)
    #expect(ours == (try Oracle.rawContents(of: top)))
    #expect(ours[(1 << 20) + 4] == 0x42 && ours[(1152 << 10) + 4] == 0x43 && ours[6 << 20] == 0x44 && ours[5] == 0)
  }

  @Test("A missing backing file is named, with where it was looked for")
  func missingBacking() throws {
    let directory = try Oracle.scratch()
    defer { try? FileManager.default.removeItem(at: directory) }
    let top = directory.appendingPathComponent("top.qcow2").path
    try Oracle.run("qemu-img", ["create", "-q", "-f", "qcow2", "-b", "gone.qcow2", "-F", "qcow2", "-u", top, "1M"])
    #expect(
      throws: DiskImageError.missingBacking(image: top, backing: "gone.qcow2", lookedAt: directory.path + "/gone.qcow2")
    ) {
      _ = try DiskImage.open(top)
    }
  }
}

extension QCow2Image.Mapping {
  var isCompressed: Bool {
    if case .compressed = self { return true }
    return false
  }
}
