/// QEMU's pvpanic ISA device (ACPI id QEMU0001, port 0x505): a guest kernel writes
/// bit 0 when it panics, and the machine stops with the panic reported.
public final class PanicNotifier: IODevice {
  public static let port: UInt64 = 0x505

  public let name = "pvpanic"
  private weak let control: (any MachineControl)?

  public init(control: any MachineControl) {
    self.control = control
  }

  /// Bit 0: "panicked", bit 1: "crash loaded" — the events this device reports.
  public func read(offset: UInt64, width: Int) -> UInt64 { 0x3 }

  public func write(offset: UInt64, width: Int, value: UInt64) {
    if value & 0x1 != 0 { control?.requestStop(.guestPanicked) }
  }
}
