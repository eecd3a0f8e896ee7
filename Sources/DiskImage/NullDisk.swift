/// A disk of zeros with no storage behind it (QEMU's `null-co`): reads give zeros, writes
/// vanish. For stand-ins — a migration's rehearsal machine, fuzzers — never for a guest's data.
public final class NullDisk: BlockBackend, @unchecked Sendable {
  public let size: UInt64
  public let isReadOnly: Bool

  public init(size: UInt64, readOnly: Bool = false) {
    self.size = size
    self.isReadOnly = readOnly
  }

  public func read(into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64) throws(DiskImageError) {
    try checkRange(offset, buffer.count)
    buffer.initializeMemory(as: UInt8.self, repeating: 0)
  }

  public func write(_ bytes: UnsafeRawBufferPointer, at offset: UInt64) throws(DiskImageError) {
    try checkRange(offset, bytes.count)
  }

  public func flush() throws(DiskImageError) {}
  public func writeZeroes(at offset: UInt64, length: UInt64) throws(DiskImageError) {}
  public func discard(at offset: UInt64, length: UInt64) throws(DiskImageError) {}
  public func close() {}
}
