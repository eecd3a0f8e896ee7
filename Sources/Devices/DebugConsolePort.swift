import Glibc

/// QEMU's isa-debugcon at port 0x402: every byte the guest writes goes to a host file, and a
/// read answers 0xE9 so firmware knows the port is there. SeaBIOS writes its debug log here
/// (`--debugcon FILE`); a machine without it leaves the port unclaimed, and the firmware quiet.
public final class DebugConsolePort: IODevice, @unchecked Sendable {
  /// The port SeaBIOS and OVMF write their logs to.
  public static let port: UInt64 = 0x402
  /// What a read returns (QEMU's readback value, which SeaBIOS checks before logging).
  public static let readback: UInt64 = 0xE9

  public let name = "debugcon"
  private let descriptor: Int32

  /// Writes to `descriptor`, which the device then owns and closes.
  public init(descriptor: Int32) {
    self.descriptor = descriptor
  }

  deinit { close(descriptor) }

  public func read(offset: UInt64, width: Int) -> UInt64 { Self.readback }

  public func write(offset: UInt64, width: Int, value: UInt64) {
    var byte = UInt8(truncatingIfNeeded: value)
    // A full disk or a closed pipe loses log bytes, never the guest's progress.
    _ = Glibc.write(descriptor, &byte, 1)
  }
}
