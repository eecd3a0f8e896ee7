import Foundation
import Testing

@testable import DiskImage

/// Hostile qcow2 files: each is refused with a sentence that names the problem, or read
/// without leaving the file; none crashes or allocates without bound.
@Suite("Hostile qcow2 images")
struct HostileImageTests {
  /// A minimal valid v3 image: 64 KiB clusters, 1 MiB, header + L1 + refcount table + block.
  static func validImage() -> [UInt8] {
    var bytes = [UInt8](repeating: 0, count: 4 * 65536)
    func put64(_ value: UInt64, _ at: Int) {
      for i in 0..<8 { bytes[at + i] = UInt8(truncatingIfNeeded: value >> (56 - 8 * i)) }
    }
    func put32(_ value: UInt32, _ at: Int) {
      for i in 0..<4 { bytes[at + i] = UInt8(truncatingIfNeeded: value >> (24 - 8 * i)) }
    }
    put32(QCow2Header.magic, 0)
    put32(3, 4)
    put32(16, 20)  // 64 KiB clusters
    put64(1 << 20, 24)
    put32(1, 36)  // one L1 entry
    put64(3 * 65536, 40)  // L1 table
    put64(65536, 48)  // refcount table
    put32(1, 56)
    put32(4, 96)  // 16-bit refcounts
    put32(104, 100)
    put64(2 * 65536, 65536)  // refcount block at cluster 2
    for cluster in 0..<4 { bytes[2 * 65536 + cluster * 2 + 1] = 1 }
    return bytes
  }

  static func open(_ bytes: [UInt8]) throws -> (any BlockBackend, URL) {
    let url = FileManager.default.temporaryDirectory.appendingPathComponent("skvm-hostile-\(UUID().uuidString).qcow2")
    try Data(bytes).write(to: url)
    do {
      return (try DiskImage.open(url.path, format: .qcow2), url)
    } catch {
      try? FileManager.default.removeItem(at: url)
      throw error
    }
  }

  static func patched(_ edits: (inout [UInt8]) -> Void) -> [UInt8] {
    var bytes = validImage()
    edits(&bytes)
    return bytes
  }

  @Test("The hand-made image opens and reads as zeros")
  func baseline() throws {
    let (image, url) = try Self.open(Self.validImage())
    defer { try? FileManager.default.removeItem(at: url) }
    #expect(image.size == 1 << 20)
    #expect(try image.read(count: 4096, at: 12345).allSatisfy { $0 == 0 })
  }

  /// Each broken header: how to break the valid image, and what the error must say.
  static let brokenHeaders: [String: (edit: @Sendable (inout [UInt8]) -> Void, expected: String)] = [
    "truncated": ({ $0.removeLast($0.count - 40) }, "too short"),
    "version 4": ({ $0[7] = 4 }, "qcow2 version 4"),
    "cluster_bits 40": ({ $0[23] = 40 }, "cluster_bits 40"),
    "size 2^63": ({ $0[24] = 0x80 }, "virtual size"),
    "L1 too small": (
      {
        $0[27] = 0x10
        $0[28] = 0
      }, "L1 table has 1 entries"
    ),
    "L1 past end": ({ $0[44] = 0x7f }, "L1 table"),
    "L1 unaligned": ({ $0[47] = 0x08 }, "L1 table offset 0x30008 is invalid"),
    "snapshot table unaligned": ({ $0[71] = 0x41 }, "snapshot table offset 0x41 is invalid"),
    "no refcount table": ({ $0[59] = 0 }, "no refcount table"),
    "huge L1": ({ $0[36] = 0x10 }, "larger than 32 MiB"),
    "refcount table past end": ({ $0[59] = 0xff }, "refcount table"),
    "encrypted": ({ $0[35] = 1 }, "encryption"),
    "unknown incompatible bit": ({ $0[79] = 0x80 }, "unknown incompatible feature bit 7"),
    "external data file": ({ $0[79] = 0x04 }, "external data file"),
    "extended L2": ({ $0[79] = 0x10 }, "extended L2"),
    "refcount order 7": ({ $0[99] = 7 }, "refcount_order 7"),
    "header_length 8": ({ $0[103] = 8 }, "header_length"),
    "too many snapshots": ({ $0[60] = 0x7f }, "snapshots"),
    "backing name past cluster": (
      {
        $0[13] = 0xff
        $0[14] = 0xdc
        $0[19] = 0xff
      }, "backing file name"
    ),
    "extension past cluster": (
      { $0.replaceSubrange(104..<112, with: [0xE2, 0x79, 0x2A, 0xCA, 0x7f, 0, 0, 0]) },
      "runs past the end of the header area"
    ),
  ]

  @Test("Broken headers are refused, naming the field", arguments: brokenHeaders.keys.sorted())
  func refused(_ name: String) throws {
    let broken = try #require(Self.brokenHeaders[name])
    #expect(performing: { _ = try Self.open(Self.patched(broken.edit)) }, throws: { "\($0)".contains(broken.expected) })
  }

  @Test("Tables pointing outside the file or unaligned fail the read that meets them, not the process")
  func badTables() throws {
    let cases: [(String, (inout [UInt8]) -> Void, String)] = [
      ("L2 past end", { $0[3 * 65536 + 1] = 0x7f }, "past the end of the file"),
      ("L2 unaligned", { $0[3 * 65536 + 6] = 0x02 }, "not cluster-aligned"),
    ]
    for (name, edit, expected) in cases {
      let (image, url) = try Self.open(Self.patched(edit))
      defer { try? FileManager.default.removeItem(at: url) }
      #expect("\(name)", performing: { _ = try image.read(count: 512, at: 0) }, throws: { "\($0)".contains(expected) })
    }
  }

  @Test("Random corruption of the first cluster never crashes: every open or read succeeds or throws")
  func randomCorruption() throws {
    var generator = SystemRandomNumberGenerator()
    for _ in 0..<300 {
      var bytes = Self.validImage()
      for _ in 0..<Int.random(in: 1...6, using: &generator) {
        bytes[Int.random(in: 0..<120, using: &generator)] = UInt8.random(in: 0...255, using: &generator)
      }
      bytes[3 * 65536 + Int.random(in: 0..<8, using: &generator)] = UInt8.random(in: 0...255, using: &generator)
      guard let (image, url) = try? Self.open(bytes) else { continue }
      defer { try? FileManager.default.removeItem(at: url) }
      _ = try? image.read(count: 4096, at: 0)
    }
  }
}

@Suite("Image locking")
struct ImageLockTests {
  @Test("A writer excludes other writers and readers (unless they force-share); readers exclude writers only")
  func secondWriter() throws {
    let url = FileManager.default.temporaryDirectory.appendingPathComponent("skvm-lock-\(UUID().uuidString).raw")
    defer { try? FileManager.default.removeItem(at: url) }
    let first = try RawImage.create(at: url.path, size: 1 << 20)
    #expect(performing: { _ = try DiskImage.open(url.path, writable: true) }, throws: { "\($0)".contains("in use") })
    #expect(performing: { _ = try RawImage.create(at: url.path, size: 10) }, throws: { "\($0)".contains("in use") })
    #expect(
      performing: { _ = try DiskImage.open(url.path) }, throws: { "\($0)".contains("being written by another process") }
    )
    #expect(try DiskImage.open(url.path, forceShare: true).size == 1 << 20, "force-share looks anyway")
    first.close()
    let readers = [try DiskImage.open(url.path), try DiskImage.open(url.path)]
    #expect(readers.allSatisfy { $0.size == 1 << 20 }, "readers share the image")
    #expect(
      "nothing writes an image others read", performing: { _ = try DiskImage.open(url.path, writable: true) },
      throws: { "\($0)".contains("in use") })
  }

  /// qemu-io with its standard input held open keeps the image open until the pipe closes.
  static func holdWithQemuIO(_ arguments: [String], _ body: () throws -> Void) throws {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: "/usr/bin/qemu-io")
    process.arguments = arguments
    let input = Pipe()
    let output = Pipe()
    process.standardInput = input
    process.standardOutput = output
    process.standardError = output
    try process.run()
    defer {
      try? input.fileHandleForWriting.close()
      process.waitUntilExit()
    }
    // It has the image open once it answers a command.
    input.fileHandleForWriting.write(Data("length\n".utf8))
    var seen = Data()
    while !String(decoding: seen, as: UTF8.self).contains("MiB"), process.isRunning {
      seen.append(output.fileHandleForReading.availableData)
    }
    try body()
  }

  @Test(
    "QEMU's locking protocol: qemu-img and qemu-io see skvm's locks, and skvm sees theirs (a writer excludes the other's writer and reader)",
    .enabled(if: Oracle.available && FileManager.default.isExecutableFile(atPath: "/usr/bin/qemu-io")))
  func interoperatesWithQEMU() throws {
    let directory = try Oracle.scratch()
    defer { try? FileManager.default.removeItem(at: directory) }
    let path = directory.appendingPathComponent("shared.qcow2").path
    try Oracle.run("qemu-img", ["create", "-f", "qcow2", path, "1M"])
    // skvm writes: QEMU's reader and writer are refused as they are by a QEMU writer.
    var writer: (any BlockBackend)? = try DiskImage.open(path, writable: true)
    #expect(performing: { try Oracle.run("qemu-img", ["info", path]) }, throws: { "\($0)".contains("\"write\" lock") })
    #expect(
      performing: { try Oracle.run("qemu-io", ["-c", "read 0 512", path]) }, throws: { "\($0)".contains("lock") })
    #expect(try Oracle.run("qemu-img", ["info", "-U", path]).contains("qcow2"), "-U looks anyway")
    writer?.close()
    writer = nil
    // skvm reads: QEMU may read beside it, not write.
    let reader = try DiskImage.open(path)
    #expect(try Oracle.run("qemu-img", ["info", path]).contains("qcow2"))
    #expect(
      performing: { try Oracle.run("qemu-io", ["-c", "write 0 512", path]) }, throws: { "\($0)".contains("lock") })
    reader.close()
    // QEMU writes: skvm's reader and writer are refused.
    try Self.holdWithQemuIO(["-f", "qcow2", path]) {
      #expect(
        performing: { _ = try DiskImage.open(path) }, throws: { "\($0)".contains("being written by another process") })
      #expect(performing: { _ = try DiskImage.open(path, writable: true) }, throws: { "\($0)".contains("in use") })
      let looking = try DiskImage.open(path, forceShare: true)
      #expect(looking.size == 1 << 20)
    }
    // QEMU reads: skvm may read beside it, not write.
    try Self.holdWithQemuIO(["-r", "-f", "qcow2", path]) {
      let beside = try DiskImage.open(path)
      #expect(beside.size == 1 << 20)
      #expect(performing: { _ = try DiskImage.open(path, writable: true) }, throws: { "\($0)".contains("in use") })
    }
    // Nothing is left locked: a writer opens it again.
    #expect(try DiskImage.open(path, writable: true).size == 1 << 20)
  }
}
