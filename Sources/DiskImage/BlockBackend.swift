import Glibc

/// A disk image as a device sees it: a byte-addressed store of `size` bytes.
///
/// Implementations are safe to call from several threads at once (virtio-blk issues
/// requests in parallel); each call either completes or throws `DiskImageError`.
public protocol BlockBackend: AnyObject, Sendable {
  /// The virtual size in bytes.
  var size: UInt64 { get }
  /// True when writes are refused.
  var isReadOnly: Bool { get }
  /// Fills `buffer` from the image at `offset`; past the end of the image is an error.
  func read(into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64) throws(DiskImageError)
  /// Writes `bytes` at `offset`; past the end of the image is an error.
  func write(_ bytes: UnsafeRawBufferPointer, at offset: UInt64) throws(DiskImageError)
  /// Fills `buffers` one after another from the image's bytes at `offset` (a scattered guest
  /// request): one vectored system call where the format allows.
  func read(into buffers: [UnsafeMutableRawBufferPointer], at offset: UInt64) throws(DiskImageError)
  /// Writes `buffers` one after another at `offset` (a gathered guest request).
  func write(_ buffers: [UnsafeRawBufferPointer], at offset: UInt64) throws(DiskImageError)
  /// Makes every completed write durable.
  func flush() throws(DiskImageError)
  /// Makes the range read as zeros, giving space back where the format can.
  func writeZeroes(at offset: UInt64, length: UInt64) throws(DiskImageError)
  /// The guest no longer needs the range; it reads as zeros afterwards.
  func discard(at offset: UInt64, length: UInt64) throws(DiskImageError)
  /// Closes the image (and its backing chain) now, releasing the write lock.
  func close()
  /// Releases (false) or takes again (true) the image's lock without closing it, for a live
  /// migration's switch-over; false when the lock cannot be taken (another process has it).
  func setLocked(_ locked: Bool) -> Bool
}

extension BlockBackend {
  /// Backends without a lock of their own (in memory, in tests) have nothing to release.
  public func setLocked(_ locked: Bool) -> Bool { true }

  /// One buffer at a time.
  public func read(into buffers: [UnsafeMutableRawBufferPointer], at offset: UInt64) throws(DiskImageError) {
    var position = offset
    for buffer in buffers {
      try read(into: buffer, at: position)
      position += UInt64(buffer.count)
    }
  }

  /// One buffer at a time.
  public func write(_ buffers: [UnsafeRawBufferPointer], at offset: UInt64) throws(DiskImageError) {
    var position = offset
    for buffer in buffers {
      try write(buffer, at: position)
      position += UInt64(buffer.count)
    }
  }

  /// The bytes `buffers` hold together.
  static func totalCount(_ buffers: [some Collection]) -> Int { buffers.reduce(0) { $0 + $1.count } }

  /// Reads `count` bytes at `offset`.
  public func read(count: Int, at offset: UInt64) throws(DiskImageError) -> [UInt8] {
    var bytes = [UInt8](repeating: 0, count: count)
    var failure: DiskImageError?
    bytes.withUnsafeMutableBytes { buffer in
      do throws(DiskImageError) { try read(into: buffer, at: offset) } catch { failure = error }
    }
    if let failure { throw failure }
    return bytes
  }

  /// Writes `bytes` at `offset`.
  public func write(_ bytes: [UInt8], at offset: UInt64) throws(DiskImageError) {
    var failure: DiskImageError?
    bytes.withUnsafeBytes { buffer in
      do throws(DiskImageError) { try write(buffer, at: offset) } catch { failure = error }
    }
    if let failure { throw failure }
  }

  /// Checks that `[offset, offset + count)` lies inside the image.
  func checkRange(_ offset: UInt64, _ count: Int) throws(DiskImageError) {
    let (end, overflow) = offset.addingReportingOverflow(UInt64(count))
    guard !overflow, end <= size else { throw .outOfRange(offset: offset, length: count, size: size) }
  }
}

/// What went wrong with a disk image, naming the file and the value.
public enum DiskImageError: Error, Equatable, CustomStringConvertible {
  /// The file could not be opened or read.
  case io(path: String, operation: String, errno: Int32)
  /// The file is not an image of the format asked for, or its metadata is inconsistent.
  case invalid(path: String, reason: String)
  /// The image uses a feature SwiftKVM does not implement.
  case unsupported(path: String, feature: String)
  /// A request reached past the end of the image.
  case outOfRange(offset: UInt64, length: Int, size: UInt64)
  /// A backing file could not be found.
  case missingBacking(image: String, backing: String, lookedAt: String)

  public var description: String {
    switch self {
    case .io(let path, let operation, let code):
      "\(path): \(operation) failed: \(String(cString: strerror(code)))"
    case .invalid(let path, let reason): "\(path): \(reason)"
    case .unsupported(let path, let feature): "\(path): uses \(feature), which SwiftKVM does not support"
    case .outOfRange(let offset, let length, let size):
      "request of \(length) bytes at offset \(offset) reaches past the end of the image (\(size) bytes)"
    case .missingBacking(let image, let backing, let lookedAt):
      "\(image): its backing file '\(backing)' was not found (looked for \(lookedAt))"
    }
  }
}
