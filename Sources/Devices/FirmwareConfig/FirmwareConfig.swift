import GuestMemory
import Synchronization

/// The guest-visible registers of the fw_cfg device.
public struct FirmwareConfigState: Sendable, Equatable, Codable {
  /// The selected item's key.
  public var selector: UInt16 = 0
  /// How far into the selected item the next read starts.
  public var offset: UInt32 = 0
  /// The upper half of the DMA address, written before the lower half that starts a transfer.
  public var dmaAddressHigh: UInt32 = 0

  public init() {}
}

/// QEMU's firmware configuration device (fw_cfg) at ports 0x510–0x51B: the selector (0x510,
/// 16-bit), the data port (0x511, a byte at a time) and the DMA address register (0x514, the
/// upper half big-endian, then 0x518, the lower half, whose write starts the transfer). It
/// hands `FirmwareConfigContents` to SeaBIOS (and anything else that asks); every item is
/// read-only.
///
/// A DMA descriptor is untrusted: it must lie in RAM (else it is ignored: there is nowhere to
/// report), and so must the whole buffer it names (else its control word says error);
/// reads past an item's end give zeros; a write is refused (error bit); lengths are the
/// guest's, bounded by RAM, never by an allocation.
public final class FirmwareConfig: IODevice {
  public static let base: UInt64 = 0x510
  public static let size: UInt64 = 12

  /// The DMA register reads as "QEMU CFG" (in port order), which tells a driver DMA is there.
  static let dmaSignature = Array("QEMU CFG".utf8)

  /// The DMA control word's bits.
  public enum Control {
    public static let error: UInt32 = 0x01
    public static let read: UInt32 = 0x02
    public static let skip: UInt32 = 0x04
    public static let select: UInt32 = 0x08
    public static let write: UInt32 = 0x10
  }

  public let name = "fw_cfg"
  /// What the firmware reads.
  public let contents: FirmwareConfigContents
  private let memory: GuestMemory
  private let state = Mutex(FirmwareConfigState())

  public init(contents: FirmwareConfigContents, memory: GuestMemory) {
    self.contents = contents
    self.memory = memory
  }

  public func read(offset: UInt64, width: Int) -> UInt64 {
    switch offset {
    case 1:
      return state.withLock { registers in
        let item = contents.items[registers.selector] ?? []
        var value: UInt64 = 0
        for index in 0..<min(width, 8) {
          let position = Int(registers.offset)
          if position < item.count {
            value |= UInt64(item[position]) << UInt64(8 * index)
            registers.offset += 1
          }
        }
        return value
      }
    case 4..<12:
      var value: UInt64 = 0
      for index in 0..<min(width, 8) where Int(offset) - 4 + index < Self.dmaSignature.count {
        value |= UInt64(Self.dmaSignature[Int(offset) - 4 + index]) << UInt64(8 * index)
      }
      return value
    default:
      return 0  // the selector is write-only
    }
  }

  public func write(offset: UInt64, width: Int, value: UInt64) {
    state.withLock { registers in
      switch (offset, width) {
      case (0, _):
        registers.selector = UInt16(truncatingIfNeeded: value)
        registers.offset = 0
      case (4, 4):
        registers.dmaAddressHigh = UInt32(truncatingIfNeeded: value).byteSwapped
      case (8, 4):
        let address = UInt64(registers.dmaAddressHigh) << 32 | UInt64(UInt32(truncatingIfNeeded: value).byteSwapped)
        registers.dmaAddressHigh = 0
        transfer(descriptorAt: address, &registers)
      default:
        break  // the data port takes no writes (QEMU ignores them too)
      }
    }
  }

  /// Runs the DMA descriptor at `address` and writes its outcome into its control word.
  private func transfer(descriptorAt address: UInt64, _ registers: inout FirmwareConfigState) {
    guard let control = try? memory.load(UInt32.self, at: address).bigEndian,
      let length = try? memory.load(UInt32.self, at: address &+ 4).bigEndian,
      let target = try? memory.load(UInt64.self, at: address &+ 8).bigEndian
    else { return }
    if control & Control.select != 0 {
      registers.selector = UInt16(truncatingIfNeeded: control >> 16)
      registers.offset = 0
    }
    let item = contents.items[registers.selector] ?? []
    var failed = false
    if control & Control.read != 0 {
      failed = !copy(item, from: Int(registers.offset), length: Int(length), to: target)
    } else if control & Control.write != 0 {
      failed = true  // every item is read-only
    }
    if !failed && control & (Control.read | Control.skip) != 0 {
      registers.offset = UInt32(min(UInt64(item.count), UInt64(registers.offset) + UInt64(length)))
    }
    _ = try? memory.store((failed ? Control.error : 0).bigEndian, at: address)
  }

  /// Copies `length` bytes of `item` from `start` into guest memory at `target` (zeros past the
  /// item's end); false if the target is not all RAM.
  private func copy(_ item: [UInt8], from start: Int, length: Int, to target: UInt64) -> Bool {
    guard length > 0 else { return true }
    guard let buffer = try? memory.bufferForWriting(at: target, length: length) else { return false }
    let available = max(0, min(length, item.count - start))
    if available > 0 {
      item.withUnsafeBytes { source in
        buffer.baseAddress!.copyMemory(from: source.baseAddress! + start, byteCount: available)
      }
    }
    if available < length {
      (buffer.baseAddress! + available).initializeMemory(as: UInt8.self, repeating: 0, count: length - available)
    }
    memory.finishedWriting(at: target, length: length)
    return true
  }
}

extension FirmwareConfig: StatefulDevice {
  public static let stateVersion = 1

  public func saveState() -> FirmwareConfigState { state.withLock { $0 } }

  /// Any register values are safe: an offset past an item's end reads zeros.
  public func restoreState(_ saved: FirmwareConfigState) throws(DeviceStateError) {
    state.withLock { $0 = saved }
  }
}
