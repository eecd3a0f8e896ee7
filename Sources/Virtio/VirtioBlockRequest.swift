import GuestMemory

/// One virtio-blk request (virtio 1.2 §5.2.6), decoded from a descriptor chain: a 16-byte
/// header, data buffers, and the one status byte the device writes last.
public struct VirtioBlockRequest: Sendable, Equatable {
  /// Request types.
  public enum Kind: UInt32, Sendable {
    case read = 0
    case write = 1
    case flush = 4
    case getID = 8
    case discard = 11
    case writeZeroes = 13
  }

  /// Status values written to the last byte.
  public enum Status: UInt8, Sendable {
    case ok = 0
    case ioError = 1
    case unsupported = 2
  }

  public static let sectorSize: UInt64 = 512
  public static let headerSize = 16

  public var type: UInt32
  public var sector: UInt64
  /// Data buffers: device-readable for writes, device-writable for reads and GET_ID.
  public var data: [DescriptorChain.Buffer]
  /// Where the status byte goes.
  public var statusAddress: UInt64

  /// Decodes `chain`; nil when it is too malformed to even carry a status byte.
  public init?(_ chain: DescriptorChain, memory: GuestMemory) {
    guard let last = chain.buffers.last, last.isWritable, last.length >= 1 else { return nil }
    statusAddress = last.address + UInt64(last.length) - 1
    // The header is the first 16 readable bytes, possibly split across buffers.
    var header = [UInt8]()
    var rest: [DescriptorChain.Buffer] = []
    for buffer in chain.buffers.dropLast() where !buffer.isWritable {
      if header.count < Self.headerSize {
        let take = min(Int(buffer.length), Self.headerSize - header.count)
        guard let bytes = try? memory.bytes(at: buffer.address, length: take) else { return nil }
        header += bytes
        if take < Int(buffer.length) {
          rest.append(
            .init(address: buffer.address + UInt64(take), length: buffer.length - UInt32(take), isWritable: false))
        }
      } else {
        rest.append(buffer)
      }
    }
    guard header.count == Self.headerSize else { return nil }
    rest += chain.buffers.dropLast().filter(\.isWritable)
    // The status byte's buffer may carry data before it.
    if last.length > 1 { rest.append(.init(address: last.address, length: last.length - 1, isWritable: true)) }
    type = header[0..<4].enumerated().reduce(0) { $0 | UInt32($1.element) << (8 * UInt32($1.offset)) }
    sector = header[8..<16].enumerated().reduce(0) { $0 | UInt64($1.element) << (8 * UInt64($1.offset)) }
    data = rest
  }

  /// Total bytes in the data buffers.
  public var dataLength: Int { data.reduce(0) { $0 + Int($1.length) } }
}
