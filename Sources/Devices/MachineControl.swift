/// Why a device asks the machine to stop running.
public enum StopRequest: Sendable, Equatable, Codable {
  /// A test guest wrote `value` to the debug-exit port (QEMU isa-debug-exit convention).
  case debugExit(value: UInt32)
  /// The guest reset the machine (i8042 pulse, port 0xCF9, triple fault is reported separately).
  case reset(source: String)
  /// The guest powered the machine off.
  case powerOff(source: String)
  /// The guest's kernel reported a panic (pvpanic).
  case guestPanicked
}

/// What devices may ask of the machine they sit in.
public protocol MachineControl: AnyObject, Sendable {
  /// Asks the machine to stop; the first request wins.
  func requestStop(_ request: StopRequest)
}
