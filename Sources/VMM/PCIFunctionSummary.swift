import Devices

/// What the monitor reports of one PCI function (QMP `query-pci`, HMP `info pci`), read from
/// its configuration space as a guest would see it now.
public struct PCIFunctionSummary: Sendable, Equatable {
  /// One decoded BAR.
  public struct Region: Sendable, Equatable {
    public var bar: Int
    public var address: UInt64
    public var size: UInt64
    public var is64Bit: Bool
    public var prefetchable: Bool
  }

  public var slot: Int
  public var vendor: UInt16
  public var device: UInt16
  public var subsystemVendor: UInt16
  public var subsystem: UInt16
  /// Base class and subclass (e.g. 0x0180), without the programming interface.
  public var classCode: UInt16
  /// INTx pin (1 = INTA, 0 = none) and the interrupt line register.
  public var interruptPin: UInt8
  public var interruptLine: UInt8
  public var regions: [Region]

  /// A short description of the class, as QEMU's `info pci` prints it.
  public var classDescription: String {
    switch classCode {
    case 0x0100: "SCSI controller"
    case 0x0180: "Storage controller"
    case 0x0600: "Host bridge"
    case 0x0780: "Communication controller"
    case 0x00FF: "Class 00ff"
    default: "Class \(String(classCode, radix: 16).leftPadded(to: 4))"
    }
  }

  /// Reads the summary of the function in `slot` from `bus`; nil when the slot is empty.
  static func read(_ bus: PCIBus, slot: Int, barSizes: [Int: UInt64]) -> PCIFunctionSummary? {
    func config(_ offset: Int, _ width: Int) -> UInt32 {
      bus.read(bus: 0, device: slot, function: 0, offset: offset, width: width)
    }
    let vendor = UInt16(truncatingIfNeeded: config(0, 2))
    guard vendor != 0xFFFF else { return nil }
    var regions: [Region] = []
    var index = 0
    while index < 6 {
      let low = config(0x10 + 4 * index, 4)
      let is64Bit = low & 0x7 == 0x4
      let high = is64Bit && index < 5 ? UInt64(config(0x14 + 4 * index, 4)) << 32 : 0
      let address = high | UInt64(low & ~0xF)
      if low & 1 == 0, address != 0, let size = barSizes[index] {
        regions.append(
          Region(bar: index, address: address, size: size, is64Bit: is64Bit, prefetchable: low & 0x8 != 0))
      }
      index += is64Bit ? 2 : 1
    }
    return PCIFunctionSummary(
      slot: slot, vendor: vendor, device: UInt16(truncatingIfNeeded: config(2, 2)),
      subsystemVendor: UInt16(truncatingIfNeeded: config(0x2C, 2)),
      subsystem: UInt16(truncatingIfNeeded: config(0x2E, 2)),
      classCode: UInt16(truncatingIfNeeded: config(0x0A, 2)), interruptPin: UInt8(truncatingIfNeeded: config(0x3D, 1)),
      interruptLine: UInt8(truncatingIfNeeded: config(0x3C, 1)), regions: regions)
  }
}

extension String {
  fileprivate func leftPadded(to width: Int) -> String {
    String(repeating: "0", count: max(0, width - count)) + self
  }
}
