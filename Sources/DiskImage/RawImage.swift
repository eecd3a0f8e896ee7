/// A raw image: the file's bytes are the disk's bytes.
public final class RawImage: BlockBackend, @unchecked Sendable {
  public let path: String
  public let isReadOnly: Bool
  public let size: UInt64
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
}
