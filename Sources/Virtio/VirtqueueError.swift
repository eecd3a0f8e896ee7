/// Why a virtqueue could not be processed: the driver broke the virtio 1.2 rules. The
/// device stops using the queue (and sets DEVICE_NEEDS_RESET); the VMM carries on.
public enum VirtqueueError: Error, Equatable, CustomStringConvertible {
  /// A descriptor index at or past the queue size.
  case descriptorIndexOutOfRange(index: UInt16, queueSize: UInt16)
  /// A chain longer than the queue (or indirect table) allows: a loop or a lie.
  case chainTooLong(limit: Int)
  /// A buffer that is not entirely inside guest RAM.
  case bufferOutsideMemory(address: UInt64, length: UInt32)
  /// A device-readable buffer after a device-writable one.
  case readableAfterWritable(index: UInt16)
  /// An indirect descriptor inside an indirect table, or with NEXT set.
  case nestedIndirect
  /// An indirect table whose length is zero, not a multiple of 16, or too long.
  case invalidIndirectTable(length: UInt32)
  /// The available index moved by more than the queue size.
  case availableIndexJump(from: UInt16, to: UInt16)
  /// The rings themselves are not inside guest RAM.
  case ringOutsideMemory(address: UInt64)

  public var description: String {
    switch self {
    case .descriptorIndexOutOfRange(let index, let size):
      "descriptor index \(index) is not below the queue size \(size)"
    case .chainTooLong(let limit): "descriptor chain longer than \(limit) (a loop?)"
    case .bufferOutsideMemory(let address, let length):
      "buffer at 0x\(String(address, radix: 16)) (\(length) bytes) is outside guest memory"
    case .readableAfterWritable(let index): "descriptor \(index) is device-readable after a device-writable one"
    case .nestedIndirect: "indirect descriptor inside an indirect table, or combined with NEXT"
    case .invalidIndirectTable(let length): "indirect table of \(length) bytes is invalid"
    case .availableIndexJump(let from, let to): "available index jumped from \(from) to \(to)"
    case .ringOutsideMemory(let address): "virtqueue ring at 0x\(String(address, radix: 16)) is outside guest memory"
    }
  }
}
