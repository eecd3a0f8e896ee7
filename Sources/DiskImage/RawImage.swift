/// A raw image: the file's bytes are the disk's bytes.
public final class RawImage: BlockBackend, @unchecked Sendable {
  public let path: String
  public let isReadOnly: Bool
  public private(set) var size: UInt64
  let file: ImageFile

  public init(path: String, readOnly: Bool = true) throws(DiskImageError) {
    self.path = path
    self.isReadOnly = readOnly
    file = try ImageFile(path: path, writable: !readOnly)
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

  public func flush() throws(DiskImageError) {
    try file.flush()
  }

  /// Sets the file's length (new space reads as zeros and takes no disk space).
  public func resize(to newSize: UInt64) throws(DiskImageError) {
    guard !isReadOnly else { throw .invalid(path: path, reason: "the image is open read-only") }
    try file.truncate(to: newSize)
    size = newSize
  }
}
