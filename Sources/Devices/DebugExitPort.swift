/// QEMU's isa-debug-exit device: a guest write of `value` stops the machine with
/// exit status `(value << 1) | 1`. For test guests; port 0xF4 by default.
public final class DebugExitPort: IODevice {
  public static let defaultPort: UInt64 = 0xF4
  public static let size: UInt64 = 4

  public let name = "debug-exit"
  private weak let control: (any MachineControl)?

  public init(control: any MachineControl) {
    self.control = control
  }

  public func read(offset: UInt64, width: Int) -> UInt64 { .allOnes(width: width) }

  public func write(offset: UInt64, width: Int, value: UInt64) {
    control?.requestStop(.debugExit(value: UInt32(truncatingIfNeeded: value)))
  }
}

extension StopRequest {
  /// The process exit status QEMU's isa-debug-exit convention gives a debug-exit value.
  public static func debugExitStatus(_ value: UInt32) -> Int32 {
    Int32(truncatingIfNeeded: (UInt64(value) << 1) | 1)
  }
}
