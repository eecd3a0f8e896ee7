import Devices

/// How a virtual machine's run ended.
public enum VirtualMachineExit: Sendable, Equatable {
  /// A test guest wrote `value` to the debug-exit port.
  case debugExit(value: UInt32)
  /// The guest reset the machine.
  case reset(source: String)
  /// The guest powered the machine off.
  case powerOff(source: String)
  /// The guest's kernel panicked (it said so through the pvpanic device).
  case guestPanicked
  /// The host asked the machine to stop (a signal, the monitor, the embedding program).
  case stoppedByHost(reason: String)
  /// A vCPU hit a state it cannot continue from (triple fault, emulation failure, entry failure).
  case guestFault(VCPUFault)
  /// The VMM itself failed while the guest ran (an ioctl error, for example).
  case vmmFailure(String)

  /// The process exit status `skvm run` uses for this outcome.
  ///
  /// 0: the guest reset or powered off; `(value << 1) | 1`: debug exit; 2: the guest
  /// crashed or its kernel panicked; 3: the VMM failed; 130 when stopped by the host.
  public var exitStatus: Int32 {
    switch self {
    case .debugExit(let value): StopRequest.debugExitStatus(value)
    case .reset, .powerOff: 0
    case .stoppedByHost: 130
    case .guestFault, .guestPanicked: 2
    case .vmmFailure: 3
    }
  }

  /// One line for the terminal, or nil when the outcome is an ordinary end.
  public var message: String? {
    switch self {
    case .debugExit, .reset, .powerOff: nil
    case .stoppedByHost(let reason): "stopped: \(reason)"
    case .guestFault(let fault): fault.description
    case .guestPanicked: "the guest kernel panicked (reported through pvpanic)"
    case .vmmFailure(let text): "VMM failure: \(text)"
    }
  }
}

/// A vCPU stopped in a state it cannot continue from, with what is known of it.
public struct VCPUFault: Sendable, Equatable, CustomStringConvertible {
  /// What happened.
  public enum Kind: Sendable, Equatable {
    /// `KVM_EXIT_SHUTDOWN`: a triple fault.
    case tripleFault
    /// `KVM_EXIT_INTERNAL_ERROR` with this suberror (1: the instruction could not be emulated).
    case internalError(suberror: UInt32)
    /// `KVM_EXIT_FAIL_ENTRY` with the hardware's reason.
    case entryFailure(hardwareReason: UInt64)
    /// An exit SwiftKVM does not handle.
    case unexpectedExit(reason: UInt32)
  }

  public var kind: Kind
  /// The vCPU's APIC id.
  public var vcpu: UInt32
  /// The instruction pointer (linear: CS base + RIP).
  public var instructionPointer: UInt64
  /// The instruction bytes at the instruction pointer, as far as they could be read.
  public var instructionBytes: [UInt8]
  /// A register dump, one line per group.
  public var registers: String
  /// False when KVM no longer had the vCPU's state at the fault (kvm_amd resets it on a triple fault).
  public var stateAvailable: Bool = true

  public var summary: String {
    switch kind {
    case .tripleFault: "triple fault (KVM_EXIT_SHUTDOWN)"
    case .internalError(let suberror) where suberror == 1:
      "KVM could not emulate an instruction (KVM_EXIT_INTERNAL_ERROR, suberror 1)"
    case .internalError(let suberror): "KVM internal error (KVM_EXIT_INTERNAL_ERROR, suberror \(suberror))"
    case .entryFailure(let reason):
      "VM entry failed (KVM_EXIT_FAIL_ENTRY, hardware reason 0x\(String(reason, radix: 16)))"
    case .unexpectedExit(let reason): "unhandled exit reason \(reason)"
    }
  }

  public var description: String {
    let bytes =
      instructionBytes.isEmpty
      ? "unreadable" : instructionBytes.map { ($0 < 16 ? "0" : "") + String($0, radix: 16) }.joined(separator: " ")
    return """
      guest stopped on vCPU \(vcpu): \(summary)
      \(stateAvailable ? "  at RIP 0x\(String(instructionPointer, radix: 16)), bytes: \(bytes)\n" : "")\(registers)
      """
  }
}
