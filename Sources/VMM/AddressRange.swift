import Devices

/// One range of a machine's port I/O or MMIO space and what owns it (`VirtualMachine.addressMap`).
public struct AddressRange: Sendable, Equatable, CustomStringConvertible {
  public let kind: IOBus.Kind
  public let base: UInt64
  public let size: UInt64
  /// The device's name, or what KVM serves there (`IOAPIC (KVM)`, `RAM`).
  public let owner: String

  /// The last address of the range.
  public var last: UInt64 { base + (size - 1) }

  public var description: String {
    "\(kind.rawValue) 0x\(String(base, radix: 16))-0x\(String(last, radix: 16)) \(owner)"
  }
}
