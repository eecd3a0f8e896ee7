import Synchronization

/// The legacy configuration mechanism: the address register at 0xCF8 and the data window
/// at 0xCFC–0xCFF (bit 31 enables; bus 23:16, device 15:11, function 10:8, register 7:2).
public final class PCIConfigPorts: IODevice {
  public static let base: UInt64 = 0xCF8
  public static let size: UInt64 = 8
  public let name = "pci-conf1"
  private let bus: PCIBus
  private let address = Atomic<UInt32>(0)

  public init(bus: PCIBus) { self.bus = bus }

  public func read(offset: UInt64, width: Int) -> UInt64 {
    if offset < 4 {
      return offset == 0 && width == 4 ? UInt64(address.load(ordering: .relaxed)) : .allOnes(width: width)
    }
    let target = address.load(ordering: .relaxed)
    guard target & 0x8000_0000 != 0 else { return .allOnes(width: width) }
    let register = Int(target & 0xFC) + Int(offset - 4)
    return UInt64(
      bus.read(
        bus: Int(target >> 16 & 0xFF), device: Int(target >> 11 & 0x1F), function: Int(target >> 8 & 0x7),
        offset: register, width: width))
  }

  public func write(offset: UInt64, width: Int, value: UInt64) {
    if offset < 4 {
      if offset == 0 && width == 4 { address.store(UInt32(truncatingIfNeeded: value), ordering: .relaxed) }
      return
    }
    let target = address.load(ordering: .relaxed)
    guard target & 0x8000_0000 != 0 else { return }
    let register = Int(target & 0xFC) + Int(offset - 4)
    bus.write(
      bus: Int(target >> 16 & 0xFF), device: Int(target >> 11 & 0x1F), function: Int(target >> 8 & 0x7),
      offset: register, width: width, value: UInt32(truncatingIfNeeded: value))
  }
}

/// PCI Express enhanced configuration access (ECAM/MMCONFIG): one 4 KiB page per function,
/// bus 0 only here (the MCFG table says so).
public final class PCIExpressECAM: IODevice {
  /// One bus: 32 devices × 8 functions × 4 KiB.
  public static let size: UInt64 = 1 << 20
  public let name = "pcie-ecam"
  private let bus: PCIBus

  public init(bus: PCIBus) { self.bus = bus }

  public func read(offset: UInt64, width: Int) -> UInt64 {
    let (device, function, register) = Self.decode(offset)
    return UInt64(bus.read(bus: 0, device: device, function: function, offset: register, width: min(width, 4)))
  }

  public func write(offset: UInt64, width: Int, value: UInt64) {
    let (device, function, register) = Self.decode(offset)
    bus.write(
      bus: 0, device: device, function: function, offset: register, width: min(width, 4),
      value: UInt32(truncatingIfNeeded: value))
  }

  private static func decode(_ offset: UInt64) -> (Int, Int, Int) {
    (Int(offset >> 15 & 0x1F), Int(offset >> 12 & 0x7), Int(offset & 0xFFF))
  }
}
