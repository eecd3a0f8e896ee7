import Synchronization

/// The guest-visible registers of a 16550A-compatible UART.
public struct SerialPortState: Sendable, Equatable, Codable {
  public var interruptEnable: UInt8 = 0
  public var lineControl: UInt8 = 0x03  // 8N1
  public var modemControl: UInt8 = 0x08  // OUT2
  public var scratch: UInt8 = 0
  public var divisorLatch: UInt16 = 12  // 9600 baud
  public var fifoControl: UInt8 = 0

  public init() {}

  /// Whether the divisor latch is selected (LCR bit 7).
  var divisorLatchAccess: Bool { lineControl & 0x80 != 0 }
}

/// An 8250/16550A serial port (COM1 at 0x3F8 by default), output only for now.
///
/// Transmitted bytes go straight to a `ConsoleOutput`; the transmitter is always
/// empty, so a guest that polls LSR before each byte never waits.
public final class SerialPort: IODevice {
  /// The conventional base port of COM1.
  public static let com1Base: UInt64 = 0x3F8
  /// Eight registers.
  public static let registerCount: UInt64 = 8

  public let name: String
  private let output: any ConsoleOutput
  private let state = Mutex(SerialPortState())

  public init(name: String = "serial0", output: any ConsoleOutput) {
    self.name = name
    self.output = output
  }

  /// A copy of the registers.
  public var snapshot: SerialPortState { state.withLock { $0 } }

  private enum Register {
    static let data: UInt64 = 0
    static let interruptEnable: UInt64 = 1
    static let interruptIdentification: UInt64 = 2
    static let lineControl: UInt64 = 3
    static let modemControl: UInt64 = 4
    static let lineStatus: UInt64 = 5
    static let modemStatus: UInt64 = 6
    static let scratch: UInt64 = 7
  }

  /// LSR: transmitter holding register empty and transmitter empty.
  static let lineStatusIdle: UInt8 = 0x60
  /// IIR: no interrupt pending (with FIFO-enabled bits when FIFOs are on).
  static let noInterruptPending: UInt8 = 0x01

  public func read(offset: UInt64, width: Int) -> UInt64 {
    state.withLock { registers in
      switch offset {
      case Register.data:
        return registers.divisorLatchAccess ? UInt64(registers.divisorLatch & 0xFF) : 0
      case Register.interruptEnable:
        return registers.divisorLatchAccess ? UInt64(registers.divisorLatch >> 8) : UInt64(registers.interruptEnable)
      case Register.interruptIdentification:
        let fifoBits: UInt8 = registers.fifoControl & 0x01 != 0 ? 0xC0 : 0
        return UInt64(Self.noInterruptPending | fifoBits)
      case Register.lineControl: return UInt64(registers.lineControl)
      case Register.modemControl: return UInt64(registers.modemControl)
      case Register.lineStatus: return UInt64(Self.lineStatusIdle)
      case Register.modemStatus: return 0xB0  // DCD, DSR, CTS
      case Register.scratch: return UInt64(registers.scratch)
      default: return .allOnes(width: width)
      }
    }
  }

  public func write(offset: UInt64, width: Int, value: UInt64) {
    let byte = UInt8(truncatingIfNeeded: value)
    let transmit: Bool = state.withLock { registers in
      switch offset {
      case Register.data:
        if registers.divisorLatchAccess {
          registers.divisorLatch = registers.divisorLatch & 0xFF00 | UInt16(byte)
          return false
        }
        return true
      case Register.interruptEnable:
        if registers.divisorLatchAccess {
          registers.divisorLatch = registers.divisorLatch & 0x00FF | UInt16(byte) << 8
        } else {
          registers.interruptEnable = byte & 0x0F
        }
      case Register.interruptIdentification: registers.fifoControl = byte
      case Register.lineControl: registers.lineControl = byte
      case Register.modemControl: registers.modemControl = byte & 0x1F
      case Register.scratch: registers.scratch = byte
      default: break
      }
      return false
    }
    if transmit { output.write(byte: byte) }
  }
}
