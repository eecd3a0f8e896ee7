import Synchronization

/// The PIIX/ICH reset control register at port 0xCF9.
///
/// Writing a value with the reset-CPU bit (bit 2) set resets the machine.
public final class ResetControlRegister: IODevice {
  public static let port: UInt64 = 0xCF9

  public let name = "reset-control"
  private weak let control: (any MachineControl)?
  private let value = Mutex<UInt8>(0)

  public init(control: any MachineControl) {
    self.control = control
  }

  public func read(offset: UInt64, width: Int) -> UInt64 {
    UInt64(value.withLock { $0 })
  }

  public func write(offset: UInt64, width: Int, value newValue: UInt64) {
    let byte = UInt8(truncatingIfNeeded: newValue)
    value.withLock { $0 = byte & 0x0A }  // only the system-reset and full-reset bits latch
    if byte & 0x04 != 0 {
      control?.requestStop(.reset(source: "reset control register (port 0xCF9, 0x\(String(byte, radix: 16)))"))
    }
  }
}

extension ResetControlRegister: StatefulDevice {
  public static let stateVersion = 1

  public func saveState() -> UInt8 { value.withLock { $0 } }

  public func restoreState(_ saved: UInt8) throws(DeviceStateError) { value.withLock { $0 = saved & 0x0A } }
}
