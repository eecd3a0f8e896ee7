import Foundation
import Testing

@testable import DiskImage

/// A guest request's scattered buffers go to the image in one vectored call (raw) or one
/// buffer at a time (qcow2); either way every byte lands where a buffer-by-buffer copy would.
@Suite("Vectored I/O")
struct VectoredIOTests {
  @Test(
    "Scattered reads and gathered writes, more buffers than one call takes, empty ones among them",
    arguments: [
      ("raw", CacheMode.writeback, false), ("raw", .none, false), ("raw", .none, true), ("qcow2", .writeback, false),
    ])
  func scatterGather(format: String, cache: CacheMode, pagesOnly: Bool) throws {
    let path = FileManager.default.temporaryDirectory.appendingPathComponent(
      "skvm-vectored-\(UUID().uuidString).\(format)"
    )
    .path
    defer { try? FileManager.default.removeItem(atPath: path) }
    let size = 8 << 20
    if format == "raw" {
      _ = try RawImage.create(at: path, size: UInt64(size))
    } else {
      try QCow2Image.create(at: path, options: QCow2CreateOptions(size: UInt64(size))).close()
    }
    let image = try DiskImage.open(path, writable: true, cache: cache)
    var mirror = [UInt8](repeating: 0, count: size)
    // 1,500 buffers (over Linux's 1,024 per call): page-aligned pages, odd lengths and empties.
    // With pagesOnly, every buffer is one aligned page: cache=none then goes past the page cache.
    let lengths = (0..<1500).map { pagesOnly ? 4096 : ($0 % 7 == 3 ? 0 : ($0 % 5 == 0 ? 512 + $0 : 4096)) }
    let arena = UnsafeMutableRawBufferPointer.allocate(byteCount: lengths.count * 8192, alignment: 4096)
    defer { arena.deallocate() }
    let buffers = lengths.enumerated().map {
      UnsafeMutableRawBufferPointer(rebasing: arena[$0.offset * 8192..<$0.offset * 8192 + $0.element])
    }
    for (number, buffer) in buffers.enumerated() {
      for index in buffer.indices { buffer[index] = UInt8(truncatingIfNeeded: index &* 7 &+ number) }
    }
    for offset in pagesOnly ? [0, 4096 * 3] : [0, 4096 * 3, 1 << 20] {
      try image.write(buffers.map { UnsafeRawBufferPointer($0) }, at: UInt64(offset))
      var position = offset
      for buffer in buffers {
        mirror.replaceSubrange(position..<position + buffer.count, with: Array(buffer))
        position += buffer.count
      }
    }
    try image.flush()
    for buffer in buffers { buffer.initializeMemory(as: UInt8.self, repeating: 0xEE) }
    try image.read(into: buffers, at: 4096)
    var position = 4096
    for (number, buffer) in buffers.enumerated() {
      #expect(Array(buffer) == Array(mirror[position..<position + buffer.count]), "buffer \(number)")
      position += buffer.count
    }
    #expect(try image.read(count: size, at: 0) == mirror, "the image holds what was written, in order")
    let total = lengths.reduce(0, +)
    #expect(throws: DiskImageError.self, "past the end is refused") {
      try image.read(into: buffers, at: UInt64(size - total + 1))
    }
    image.close()
  }
}
