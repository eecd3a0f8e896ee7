import CSystemCalls
import Glibc

/// A raw image: the file's bytes are the disk's bytes.
public final class RawImage: BlockBackend, @unchecked Sendable {
  public let path: String
  public let isReadOnly: Bool
  public private(set) var size: UInt64
  let file: ImageFile

  /// Creates (or empties) a sparse raw image of `size` bytes, open for writing.
  public static func create(at path: String, size: UInt64) throws(DiskImageError) -> RawImage {
    let file = try ImageFile.create(path: path)
    try file.truncate(to: size)
    return RawImage(file: file)
  }

  private init(file: ImageFile) {
    self.path = file.path
    self.isReadOnly = false
    self.file = file
    self.size = file.length
  }

  /// Opens the raw image at `path`; see `DiskImage.open` for locking and `forceShare`.
  public init(path: String, readOnly: Bool = true, cache: CacheMode = .writeback, forceShare: Bool = false)
    throws(DiskImageError)
  {
    self.path = path
    self.isReadOnly = readOnly
    file = try ImageFile(path: path, writable: !readOnly, cache: cache, forceShare: forceShare)
    size = file.length
  }

  public func read(into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64) throws(DiskImageError) {
    try checkRange(offset, buffer.count)
    try file.read(into: buffer, at: offset)
  }

  public func write(_ bytes: UnsafeRawBufferPointer, at offset: UInt64) throws(DiskImageError) {
    guard !isReadOnly else { throw .invalid(path: path, reason: "the image is open read-only") }
    try checkRange(offset, bytes.count)
    try file.write(bytes, at: offset)
  }

  public func read(into buffers: [UnsafeMutableRawBufferPointer], at offset: UInt64) throws(DiskImageError) {
    try checkRange(offset, Self.totalCount(buffers))
    try file.read(into: buffers, at: offset)
  }

  public func write(_ buffers: [UnsafeRawBufferPointer], at offset: UInt64) throws(DiskImageError) {
    guard !isReadOnly else { throw .invalid(path: path, reason: "the image is open read-only") }
    try checkRange(offset, Self.totalCount(buffers))
    try file.write(buffers, at: offset)
  }

  public func flush() throws(DiskImageError) {
    try file.flush()
  }

  /// Punches a hole (the file keeps its size and reads zeros there); where the file system
  /// cannot, writes zeros.
  public func writeZeroes(at offset: UInt64, length: UInt64) throws(DiskImageError) {
    guard !isReadOnly else { throw .invalid(path: path, reason: "the image is open read-only") }
    try checkRange(offset, Int(clamping: length))
    let punchHoleKeepSize: Int32 = 0x02 | 0x01  // FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE
    if file.allocate(mode: punchHoleKeepSize, at: offset, length: length) { return }
    var position = offset
    let zeros = [UInt8](repeating: 0, count: 1 << 20)
    while position < offset + length {
      let count = Int(min(UInt64(zeros.count), offset + length - position))
      try file.write(Array(zeros[0..<count]), at: position)
      position += UInt64(count)
    }
  }

  public func close() { file.close() }

  public func setLocked(_ locked: Bool) -> Bool { file.setLocked(locked) }

  public func discard(at offset: UInt64, length: UInt64) throws(DiskImageError) {
    try writeZeroes(at: offset, length: length)
  }

  /// Sets the file's length (new space reads as zeros and takes no disk space).
  public func resize(to newSize: UInt64) throws(DiskImageError) {
    guard !isReadOnly else { throw .invalid(path: path, reason: "the image is open read-only") }
    try file.truncate(to: newSize)
    size = newSize
  }
}
