import Foundation
import Testing

@testable import DiskImage

/// cache=none: aligned transfers go past the page cache (O_DIRECT), unaligned ones through
/// the buffered descriptor; either way the bytes are the same.
@Suite("Cache modes")
struct CacheModeTests {
  @Test(
    "cache=none reads and writes aligned and unaligned ranges correctly, for raw and qcow2",
    arguments: ["raw", "qcow2"])
  func directIO(format: String) throws {
    let path = FileManager.default.temporaryDirectory.appendingPathComponent(
      "skvm-direct-\(UUID().uuidString).\(format)"
    )
    .path
    defer { try? FileManager.default.removeItem(atPath: path) }
    if format == "raw" {
      _ = try RawImage.create(at: path, size: 4 << 20)
    } else {
      try QCow2Image.create(at: path, options: QCow2CreateOptions(size: 4 << 20)).close()
    }
    let image = try DiskImage.open(path, writable: true, cache: .none)
    #expect(
      ((image as? RawImage)?.file.directFD ?? (image as? QCow2Image)?.file.directFD ?? -1) >= 0,
      "O_DIRECT descriptor open")
    var mirror = [UInt8](repeating: 0, count: 4 << 20)
    // Page-aligned buffers (the guest's are), then odd offsets and lengths.
    let aligned = UnsafeMutableRawBufferPointer.allocate(byteCount: 65536, alignment: 4096)
    defer { aligned.deallocate() }
    for (offset, length, seed) in [(0, 65536, 1), (1 << 20, 8192, 2), (3 + 4096, 1000, 3), (2 << 20 + 511, 4097, 4)] {
      let bytes = (0..<length).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ seed) }
      aligned.copyBytes(from: bytes)
      try image.write(UnsafeRawBufferPointer(rebasing: aligned[0..<length]), at: UInt64(offset))
      mirror.replaceSubrange(offset..<offset + length, with: bytes)
    }
    try image.flush()
    for (offset, length) in [(0, 65536), (1 << 20, 8192), (4096, 4096), (2 << 20, 8192)] {
      let target = UnsafeMutableRawBufferPointer(rebasing: aligned[0..<length])
      try image.read(into: target, at: UInt64(offset))
      #expect(Array(target) == Array(mirror[offset..<offset + length]), "bytes at \(offset)")
    }
    #expect(try image.read(count: 1000, at: 4099) == Array(mirror[4099..<5099]))
    image.close()
    let reopened = try DiskImage.open(path)
    #expect(
      try reopened.read(count: 4097, at: 2 << 20 + 511) == Array(mirror[(2 << 20 + 511)..<(2 << 20 + 511 + 4097)]))
  }
}
