/// One request from the driver: the buffers of a descriptor chain, device-readable ones
/// first, then device-writable ones, each checked to lie inside guest memory.
public struct DescriptorChain: Sendable, Equatable {
  /// A guest-physical buffer.
  public struct Buffer: Sendable, Equatable {
    public var address: UInt64
    public var length: UInt32
    public var isWritable: Bool
  }

  /// The head descriptor's index: what goes back in the used ring.
  public var head: UInt16
  public var buffers: [Buffer]

  /// The device-readable buffers (the driver's request).
  public var readable: ArraySlice<Buffer> { buffers.prefix { !$0.isWritable } }
  /// The device-writable buffers (room for the device's answer).
  public var writable: ArraySlice<Buffer> { buffers.drop { !$0.isWritable } }
  /// Bytes the device may read.
  public var readableLength: Int { readable.reduce(0) { $0 + Int($1.length) } }
  /// Bytes the device may write.
  public var writableLength: Int { writable.reduce(0) { $0 + Int($1.length) } }
}
