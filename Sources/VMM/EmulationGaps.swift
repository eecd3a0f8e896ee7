import CKVM
import KVM

/// Instructions some KVMs cannot emulate at guest ring 0 but a VMM can complete.
///
/// On hosts whose KVM emulates guest kernel code (PVM), KVM's emulator performs
/// `INT n` only in real mode, and it gives up on `fwait`. Both then exit as
/// `KVM_EXIT_INTERNAL_ERROR` (emulation failure) with the instruction bytes. Linux
/// runs `int3` in its self-test and `fwait` in FPU code, so without this a stock
/// kernel stops there. On VMX/SVM hosts these exits never happen.
enum EmulationGaps {
  enum Completed {
    case breakpoint
    case fwait
  }

  /// Completes the failed instruction if it is one of the known gaps; returns what was done,
  /// or nil when the failure must be reported.
  static func complete(_ vcpu: KVMVCPU) -> Completed? {
    let run = vcpu.run
    guard ckvm_internal_suberror(run) == UInt32(KVM_INTERNAL_ERROR_EMULATION),
      ckvm_emulation_failure_flags(run) & UInt64(KVM_INTERNAL_ERROR_EMULATION_FLAG_INSTRUCTION_BYTES) != 0,
      ckvm_emulation_failure_insn_size(run) >= 1
    else { return nil }
    switch ckvm_emulation_failure_insn_bytes(run)[0] {
    case 0xCC:  // int3: #BP is a trap, so the handler must see RIP after the instruction
      guard advanceInstructionPointer(vcpu), var events = try? vcpu.events() else { return nil }
      events.exception.injected = 1
      events.exception.nr = 3
      events.exception.has_error_code = 0
      events.exception.error_code = 0
      events.flags = 0
      guard (try? vcpu.setEvents(events)) != nil else { return nil }
      return .breakpoint
    case 0x9B:  // fwait: a no-op unless an unmasked x87 exception is pending (then #MF is due)
      guard let fpu = try? vcpu.fpu() else { return nil }
      let pendingException = fpu.fsw & 0x80 != 0
      guard !pendingException, advanceInstructionPointer(vcpu) else { return nil }
      return .fwait
    default:
      return nil
    }
  }

  private static func advanceInstructionPointer(_ vcpu: KVMVCPU) -> Bool {
    guard var registers = try? vcpu.registers() else { return false }
    registers.rip &+= 1
    return (try? vcpu.setRegisters(registers)) != nil
  }
}
