import Synchronization

/// The legacy configuration mechanism: the 32-bit address register at 0xCF8 and the data
/// window at 0xCFC–0xCFF (bit 31 enables; bus 23:16, device 15:11, function 10:8, register
/// 7:2). Only 32-bit accesses reach the address register, so a byte at 0xCF9 stays the
/// reset control register's, as on PC chipsets: register `addressPort` at 0xCF8 for one
/// byte and `dataPort` at 0xCFC for four.
public final class PCIConfigPorts: Sendable {
  public static let addressBase: UInt64 = 0xCF8
  public static let dataBase: UInt64 = 0xCFC
  private let bus: PCIBus
  private let address = Atomic<UInt32>(0)

  public init(bus: PCIBus) { self.bus = bus }

  /// The device for 0xCF8.
  public var addressPort: any IODevice { AddressPort(owner: self) }
  /// The device for 0xCFC–0xCFF.
  public var dataPort: any IODevice { DataPort(owner: self) }

  func readAddress(width: Int) -> UInt64 {
    width == 4 ? UInt64(address.load(ordering: .relaxed)) : .allOnes(width: width)
  }

  func writeAddress(width: Int, value: UInt64) {
    if width == 4 { address.store(UInt32(truncatingIfNeeded: value), ordering: .relaxed) }
  }

  func readData(offset: UInt64, width: Int) -> UInt64 {
    let target = address.load(ordering: .relaxed)
    guard target & 0x8000_0000 != 0 else { return .allOnes(width: width) }
    return UInt64(
      bus.read(
        bus: Int(target >> 16 & 0xFF), device: Int(target >> 11 & 0x1F), function: Int(target >> 8 & 0x7),
        offset: Int(target & 0xFC) + Int(offset), width: width))
  }

  func writeData(offset: UInt64, width: Int, value: UInt64) {
    let target = address.load(ordering: .relaxed)
    guard target & 0x8000_0000 != 0 else { return }
    bus.write(
      bus: Int(target >> 16 & 0xFF), device: Int(target >> 11 & 0x1F), function: Int(target >> 8 & 0x7),
      offset: Int(target & 0xFC) + Int(offset), width: width, value: UInt32(truncatingIfNeeded: value))
  }

  private final class AddressPort: IODevice {
    let name = "pci-conf1-address"
    let owner: PCIConfigPorts
    init(owner: PCIConfigPorts) { self.owner = owner }
    func read(offset: UInt64, width: Int) -> UInt64 { owner.readAddress(width: width) }
    func write(offset: UInt64, width: Int, value: UInt64) { owner.writeAddress(width: width, value: value) }
  }

  private final class DataPort: IODevice {
    let name = "pci-conf1-data"
    let owner: PCIConfigPorts
    init(owner: PCIConfigPorts) { self.owner = owner }
    func read(offset: UInt64, width: Int) -> UInt64 { owner.readData(offset: offset, width: width) }
    func write(offset: UInt64, width: Int, value: UInt64) {
      owner.writeData(offset: offset, width: width, value: value)
    }
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

extension PCIConfigPorts: StatefulDevice {
  public static let stateVersion = 1

  /// The address latched at 0xCF8.
  public func saveState() -> UInt32 { address.load(ordering: .relaxed) }

  public func restoreState(_ saved: UInt32) throws(DeviceStateError) { address.store(saved, ordering: .relaxed) }
}
