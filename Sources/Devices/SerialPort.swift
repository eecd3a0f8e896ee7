import Synchronization

/// The guest-visible state of a 16550A UART.
public struct SerialPortState: Sendable, Equatable, Codable {
  public var interruptEnable: UInt8 = 0
  public var lineControl: UInt8 = 0x03  // 8N1
  public var modemControl: UInt8 = 0x08  // OUT2
  public var scratch: UInt8 = 0
  public var divisorLatch: UInt16 = 12  // 9600 baud
  public var fifoControl: UInt8 = 0
  /// Received bytes not yet read by the guest.
  public var receiveBuffer: [UInt8] = []
  /// A transmitter-empty interrupt is pending (cleared by reading IIR or writing THR).
  public var transmitterInterruptPending = false
  /// The level last driven on the interrupt line.
  public var interruptLevel = false

  public init() {}

  var divisorLatchAccess: Bool { lineControl & 0x80 != 0 }
  var loopback: Bool { modemControl & 0x10 != 0 }
}

/// An 8250/16550A serial port (COM1 at 0x3F8, IRQ 4 by default).
///
/// Transmitted bytes go straight to a `ConsoleOutput`, so the transmitter is always
/// empty. Received bytes (from `receive(_:)`) wait in a FIFO. Interrupts: received
/// data and transmitter empty, on the line given. Loopback mode reflects MCR into
/// MSR and transmitted bytes into the receiver, which Linux's autoconfig checks.
public final class SerialPort: IODevice {
  public static let com1Base: UInt64 = 0x3F8
  public static let com1Interrupt: UInt32 = 4
  public static let registerCount: UInt64 = 8
  /// The most received bytes held for the guest; `receive` accepts no more.
  public static let receiveCapacity = 4096

  public let name: String
  private let output: any ConsoleOutput
  private let interrupt: any InterruptLine
  private let state = Mutex(SerialPortState())

  public init(
    name: String = "serial0", output: any ConsoleOutput, interrupt: any InterruptLine = DisconnectedInterruptLine()
  ) {
    self.name = name
    self.output = output
    self.interrupt = interrupt
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

  private enum Bit {
    static let receivedDataInterrupt: UInt8 = 0x01
    static let transmitterEmptyInterrupt: UInt8 = 0x02
    static let dataReady: UInt8 = 0x01
    static let transmitterIdle: UInt8 = 0x60
  }

  /// Queues bytes for the guest to read; returns how many were accepted (the rest must be offered again).
  public func receive(_ bytes: some Collection<UInt8>) -> Int {
    let (accepted, level) = state.withLock { registers in
      let room = max(0, Self.receiveCapacity - registers.receiveBuffer.count)
      registers.receiveBuffer.append(contentsOf: bytes.prefix(room))
      return (min(room, bytes.count), Self.updateInterrupt(&registers))
    }
    drive(level)
    return accepted
  }

  public func read(offset: UInt64, width: Int) -> UInt64 {
    let (value, level) = state.withLock { registers in
      let value = Self.read(offset, &registers)
      return (value, Self.updateInterrupt(&registers))
    }
    drive(level)
    return UInt64(value)
  }

  public func write(offset: UInt64, width: Int, value: UInt64) {
    let byte = UInt8(truncatingIfNeeded: value)
    let (transmit, level) = state.withLock { registers in
      let transmit = Self.write(offset, byte, &registers)
      return (transmit, Self.updateInterrupt(&registers))
    }
    if transmit { output.write(byte: byte) }
    drive(level)
  }

  private static func read(_ offset: UInt64, _ registers: inout SerialPortState) -> UInt8 {
    switch offset {
    case Register.data:
      if registers.divisorLatchAccess { return UInt8(registers.divisorLatch & 0xFF) }
      return registers.receiveBuffer.isEmpty ? 0 : registers.receiveBuffer.removeFirst()
    case Register.interruptEnable:
      return registers.divisorLatchAccess ? UInt8(registers.divisorLatch >> 8) : registers.interruptEnable
    case Register.interruptIdentification:
      let fifoBits: UInt8 = registers.fifoControl & 0x01 != 0 ? 0xC0 : 0
      if registers.interruptEnable & Bit.receivedDataInterrupt != 0, !registers.receiveBuffer.isEmpty {
        return 0x04 | fifoBits
      }
      if registers.interruptEnable & Bit.transmitterEmptyInterrupt != 0, registers.transmitterInterruptPending {
        registers.transmitterInterruptPending = false  // reading IIR acknowledges it
        return 0x02 | fifoBits
      }
      return 0x01 | fifoBits
    case Register.lineControl: return registers.lineControl
    case Register.modemControl: return registers.modemControl
    case Register.lineStatus:
      return Bit.transmitterIdle | (registers.receiveBuffer.isEmpty ? 0 : Bit.dataReady)
    case Register.modemStatus:
      guard registers.loopback else { return 0xB0 }  // DCD, DSR, CTS
      let control = registers.modemControl
      // Loopback: DTR→DSR, RTS→CTS, OUT1→RI, OUT2→DCD.
      return (control & 0x01) << 5 | (control & 0x02) << 3 | (control & 0x04) << 4 | (control & 0x08) << 4
    case Register.scratch: return registers.scratch
    default: return 0xFF
    }
  }

  /// Applies a register write; returns whether `byte` is to be transmitted.
  private static func write(_ offset: UInt64, _ byte: UInt8, _ registers: inout SerialPortState) -> Bool {
    switch offset {
    case Register.data:
      if registers.divisorLatchAccess {
        registers.divisorLatch = registers.divisorLatch & 0xFF00 | UInt16(byte)
        return false
      }
      registers.transmitterInterruptPending = true  // sent at once: the holding register is empty again
      if registers.loopback {
        if registers.receiveBuffer.count < receiveCapacity { registers.receiveBuffer.append(byte) }
        return false
      }
      return true
    case Register.interruptEnable:
      if registers.divisorLatchAccess {
        registers.divisorLatch = registers.divisorLatch & 0x00FF | UInt16(byte) << 8
      } else {
        // Enabling the transmitter-empty interrupt while the transmitter is empty raises it.
        if byte & Bit.transmitterEmptyInterrupt != 0, registers.interruptEnable & Bit.transmitterEmptyInterrupt == 0 {
          registers.transmitterInterruptPending = true
        }
        registers.interruptEnable = byte & 0x0F
      }
    case Register.interruptIdentification:
      registers.fifoControl = byte
      if byte & 0x02 != 0 { registers.receiveBuffer.removeAll() }
    case Register.lineControl: registers.lineControl = byte
    case Register.modemControl: registers.modemControl = byte & 0x1F
    case Register.scratch: registers.scratch = byte
    default: break
    }
    return false
  }

  /// The level the interrupt line should have now; records it. Nil when unchanged.
  private static func updateInterrupt(_ registers: inout SerialPortState) -> Bool? {
    let receive = registers.interruptEnable & Bit.receivedDataInterrupt != 0 && !registers.receiveBuffer.isEmpty
    let transmit =
      registers.interruptEnable & Bit.transmitterEmptyInterrupt != 0 && registers.transmitterInterruptPending
    // OUT2 gates the interrupt output on PC serial ports.
    let level = (receive || transmit) && registers.modemControl & 0x08 != 0
    guard level != registers.interruptLevel else { return nil }
    registers.interruptLevel = level
    return level
  }

  private func drive(_ level: Bool?) {
    if let level { interrupt.set(high: level) }
  }
}

extension SerialPort: StatefulDevice {
  public static let stateVersion = 1

  public func saveState() -> SerialPortState { state.withLock { $0 } }

  public func restoreState(_ saved: SerialPortState) throws(DeviceStateError) {
    guard saved.receiveBuffer.count <= Self.receiveCapacity else {
      throw DeviceStateError("\(saved.receiveBuffer.count) received bytes is more than the FIFO holds")
    }
    state.withLock { $0 = saved }
    // The in-kernel irqchip was restored with its pins; the line's level follows the registers.
    if saved.interruptLevel { interrupt.set(high: true) }
  }
}
