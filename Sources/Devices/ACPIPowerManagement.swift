import Synchronization

/// The guest-visible state of the ACPI PM1 event and control registers.
public struct ACPIPowerManagementState: Sendable, Equatable, Codable {
  /// PM1 status (write 1 to clear).
  public var status: UInt16 = 0
  /// PM1 enable.
  public var enable: UInt16 = 0
  /// PM1 control (SCI_EN always reads as set: there is no SMI to switch modes).
  public var control: UInt16 = 1
  public var sciLevel = false

  public init() {}
}

/// The ACPI fixed-hardware PM1a event block (status, enable) and control block, as the
/// FADT describes them: the guest powers off by writing SLP_TYP=5 with SLP_EN, and the
/// host presses the power button through `pressPowerButton()`, which raises the SCI.
///
/// Layout at `base`: +0 PM1_STS (2 bytes), +2 PM1_EN (2 bytes), +4 PM1_CNT (2 bytes).
public final class ACPIPowerManagement: IODevice {
  public static let base: UInt64 = 0x600
  public static let size: UInt64 = 6
  /// The SCI's interrupt (ISA IRQ 9, level-triggered).
  public static let sciInterrupt: UInt32 = 9
  /// The SLP_TYP value the DSDT's `_S5_` object gives for soft-off.
  public static let softOffSleepType: UInt16 = 5
  static let powerButtonStatus: UInt16 = 1 << 8
  static let sleepEnable: UInt16 = 1 << 13

  public let name = "acpi-pm"
  private weak let control: (any MachineControl)?
  private let interrupt: any InterruptLine
  private let state = Mutex(ACPIPowerManagementState())

  public init(control: any MachineControl, interrupt: any InterruptLine) {
    self.control = control
    self.interrupt = interrupt
  }

  /// Presses the ACPI power button: a guest that listens shuts down in order.
  public func pressPowerButton() {
    update { $0.status |= Self.powerButtonStatus }
  }

  public func read(offset: UInt64, width: Int) -> UInt64 {
    let registers = state.withLock { $0 }
    var bytes: [UInt8] = []
    for value in [registers.status, registers.enable, registers.control] {
      bytes += [UInt8(value & 0xFF), UInt8(value >> 8)]
    }
    var result: UInt64 = 0
    for index in 0..<width where Int(offset) + index < bytes.count {
      result |= UInt64(bytes[Int(offset) + index]) << (8 * index)
    }
    return result
  }

  public func write(offset: UInt64, width: Int, value: UInt64) {
    var powerOff = false
    update { registers in
      for index in 0..<width {
        let byte = UInt16(truncatingIfNeeded: value >> (8 * index)) & 0xFF
        let position = Int(offset) + index
        let shift = UInt16((position % 2) * 8)
        switch position / 2 {
        case 0: registers.status &= ~(byte << shift)  // write 1 to clear
        case 1: registers.enable = registers.enable & ~(0xFF << shift) | byte << shift
        case 2: registers.control = registers.control & ~(0xFF << shift) | byte << shift
        default: break
        }
      }
      let sleepType = (registers.control >> 10) & 0x7
      if registers.control & Self.sleepEnable != 0 {
        registers.control &= ~Self.sleepEnable  // SLP_EN is write-only
        powerOff = sleepType == Self.softOffSleepType
      }
      registers.control |= 1  // SCI_EN
    }
    if powerOff { control?.requestStop(.powerOff(source: "ACPI sleep state S5 (PM1a control)")) }
  }

  private func update(_ body: (inout ACPIPowerManagementState) -> Void) {
    let level: Bool? = state.withLock { registers in
      body(&registers)
      let level = registers.status & registers.enable != 0
      guard level != registers.sciLevel else { return nil }
      registers.sciLevel = level
      return level
    }
    if let level { interrupt.set(high: level) }
  }
}

extension ACPIPowerManagement: StatefulDevice {
  public static let stateVersion = 1

  public func saveState() -> ACPIPowerManagementState { state.withLock { $0 } }

  public func restoreState(_ saved: ACPIPowerManagementState) throws(DeviceStateError) {
    state.withLock { $0 = saved }
    if saved.sciLevel { interrupt.set(high: true) }
  }
}
