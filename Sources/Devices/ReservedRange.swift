/// A range of an address space that something other than a device on the bus owns: KVM's
/// in-kernel PIC, PIT, IOAPIC and local APIC, guest RAM, KVM's own pages. It is put on the bus
/// so the map shows it and a device added over it is refused by name; guest accesses to it
/// are served by KVM (or are RAM) and never reach it — if one does, it reads as a floating bus.
public final class ReservedRange: IODevice {
  public let name: String

  public init(_ name: String) {
    self.name = name
  }

  public func read(offset: UInt64, width: Int) -> UInt64 { .allOnes(width: width) }

  public func write(offset: UInt64, width: Int, value: UInt64) {}
}
