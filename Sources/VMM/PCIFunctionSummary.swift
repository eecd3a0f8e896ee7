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

  /// The summary of the function in `slot` whose configuration space is `space`; BARs are
  /// listed once the guest (or skvm as firmware) has given them an address.
  public init(slot: Int, space: PCIConfigSpace) {
    func config(_ offset: Int, _ width: Int) -> UInt32 { space.read(offset, width: width) }
    self.slot = slot
    vendor = UInt16(truncatingIfNeeded: config(0, 2))
    device = UInt16(truncatingIfNeeded: config(2, 2))
    subsystemVendor = UInt16(truncatingIfNeeded: config(0x2C, 2))
    subsystem = UInt16(truncatingIfNeeded: config(0x2E, 2))
    classCode = UInt16(truncatingIfNeeded: config(0x0A, 2))
    interruptPin = UInt8(truncatingIfNeeded: config(0x3D, 1))
    interruptLine = UInt8(truncatingIfNeeded: config(0x3C, 1))
    regions = space.bars.sorted { $0.key < $1.key }.compactMap { index, bar in
      guard bar.kind != .io, let address = space.barAddress(index), address != 0 else { return nil }
      return Region(
        bar: index, address: address, size: bar.size, is64Bit: bar.kind == .memory64, prefetchable: bar.prefetchable)
    }
  }
}

extension String {
  fileprivate func leftPadded(to width: Int) -> String {
    String(repeating: "0", count: max(0, width - count)) + self
  }
}
