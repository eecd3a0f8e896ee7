import Synchronization

/// The guest-visible state of the i8042 keyboard controller.
public struct I8042State: Sendable, Equatable, Codable {
  /// The controller configuration byte ("command byte").
  public var commandByte: UInt8 = 0x45
  /// A byte waiting to be read from port 0x60, if any.
  public var output: UInt8?
  /// The command that expects a data byte on port 0x60 next, if any.
  public var pendingCommand: UInt8?

  public init() {}
}

/// The i8042 keyboard controller at ports 0x60 and 0x64: enough for firmware-less
/// guests and Linux's probing, and its reset line (command 0xFE), which stops the machine.
///
/// The status register always reads "input buffer empty", so a guest waiting to
/// send a command never spins.
public final class I8042Controller: IODevice {
  /// Port 0x60 (data) and port 0x64 (status/command) are 4 apart; register the device at 0x60 with size 5.
  public static let base: UInt64 = 0x60
  public static let size: UInt64 = 5

  public let name = "i8042"
  private weak let control: (any MachineControl)?
  private let state = Mutex(I8042State())

  public init(control: any MachineControl) {
    self.control = control
  }

  private enum Command {
    static let readCommandByte: UInt8 = 0x20
    static let writeCommandByte: UInt8 = 0x60
    static let selfTest: UInt8 = 0xAA
    static let interfaceTest: UInt8 = 0xAB
    static let pulseResetLine: UInt8 = 0xFE
  }

  private enum Status {
    static let outputFull: UInt8 = 0x01
    static let system: UInt8 = 0x04
    static let command: UInt8 = 0x08
    static let unlocked: UInt8 = 0x10
  }

  public func read(offset: UInt64, width: Int) -> UInt64 {
    state.withLock { registers in
      switch offset {
      case 0:
        let value = registers.output ?? 0
        registers.output = nil
        return UInt64(value)
      case 4:
        var status = Status.system | Status.unlocked
        if registers.output != nil { status |= Status.outputFull }
        return UInt64(status)
      default:
        return .allOnes(width: width)
      }
    }
  }

  public func write(offset: UInt64, width: Int, value: UInt64) {
    let byte = UInt8(truncatingIfNeeded: value)
    let reset: Bool = state.withLock { registers in
      switch offset {
      case 0:
        if registers.pendingCommand == Command.writeCommandByte { registers.commandByte = byte }
        registers.pendingCommand = nil
      case 4:
        switch byte {
        case Command.readCommandByte: registers.output = registers.commandByte
        case Command.writeCommandByte: registers.pendingCommand = byte
        case Command.selfTest: registers.output = 0x55
        case Command.interfaceTest: registers.output = 0x00
        case Command.pulseResetLine: return true
        default: break
        }
      default: break
      }
      return false
    }
    if reset { control?.requestStop(.reset(source: "i8042 reset line (port 0x64, 0xFE)")) }
  }
}

extension I8042Controller: StatefulDevice {
  public static let stateVersion = 1

  public func saveState() -> I8042State { state.withLock { $0 } }

  public func restoreState(_ saved: I8042State) throws(DeviceStateError) { state.withLock { $0 = saved } }
}
