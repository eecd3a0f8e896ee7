import CKVM
import GuestMemory
import KVM

/// Gathers what is known about a vCPU that stopped for good, on that vCPU's thread.
enum VCPUFaultReport {
  static func make(kind: VCPUFault.Kind, vcpu: KVMVCPU, memory: GuestMemory) -> VCPUFault {
    let registers = try? vcpu.registers()
    let special = try? vcpu.specialRegisters()
    let longMode = (special?.efer ?? 0) & (1 << 10) != 0
    let rip = registers?.rip ?? 0
    let linear = longMode ? rip : (special?.cs.base ?? 0) &+ rip
    var bytes = emulationFailureBytes(kind: kind, run: vcpu.run)
    if bytes.isEmpty, let physical = (try? vcpu.translate(linear)) ?? nil {
      bytes = readUpTo(15, at: physical, memory: memory)
    }
    var text = "  (registers unavailable)"
    if let registers, let special { text = format(registers, special) }
    // kvm_amd reinitialises the VMCB after a shutdown intercept: the state then reads as
    // the reset vector and says nothing about where the fault happened.
    let stateLost = kind == .tripleFault && special?.cs.selector == 0xF000 && rip == 0xFFF0
    if stateLost {
      bytes = []
      text = "  (the vCPU's state at the fault is not available: this host's KVM reset the vCPU on the triple fault)"
    }
    return VCPUFault(
      kind: kind, vcpu: vcpu.id, instructionPointer: linear, instructionBytes: bytes, registers: text,
      stateAvailable: !stateLost)
  }

  /// The instruction bytes KVM put in the exit itself, when it did.
  private static func emulationFailureBytes(kind: VCPUFault.Kind, run: UnsafeMutablePointer<kvm_run>) -> [UInt8] {
    guard case .internalError(let suberror) = kind, suberror == UInt32(KVM_INTERNAL_ERROR_EMULATION),
      ckvm_emulation_failure_flags(run) & UInt64(KVM_INTERNAL_ERROR_EMULATION_FLAG_INSTRUCTION_BYTES) != 0
    else { return [] }
    let source = ckvm_emulation_failure_insn_bytes(run)
    let size = min(Int(ckvm_emulation_failure_insn_size(run)), 15)
    return Array(UnsafeBufferPointer(start: source, count: size))
  }

  private static func readUpTo(_ count: Int, at address: UInt64, memory: GuestMemory) -> [UInt8] {
    for length in stride(from: count, through: 1, by: -1) {
      if let bytes = try? memory.bytes(at: address, length: length) { return bytes }
    }
    return []
  }

  private static func hex(_ value: UInt64) -> String {
    let digits = String(value, radix: 16)
    return String(repeating: "0", count: max(0, 16 - digits.count)) + digits
  }

  private static func format(_ r: Registers, _ s: SpecialRegisters) -> String {
    let mode =
      s.efer & (1 << 10) != 0 ? "long" : (s.cr0 & 1 != 0 ? "protected" : "real")
    return """
        rax=\(hex(r.rax)) rbx=\(hex(r.rbx)) rcx=\(hex(r.rcx)) rdx=\(hex(r.rdx))
        rsi=\(hex(r.rsi)) rdi=\(hex(r.rdi)) rsp=\(hex(r.rsp)) rbp=\(hex(r.rbp))
        r8 =\(hex(r.r8)) r9 =\(hex(r.r9)) r10=\(hex(r.r10)) r11=\(hex(r.r11))
        r12=\(hex(r.r12)) r13=\(hex(r.r13)) r14=\(hex(r.r14)) r15=\(hex(r.r15))
        rip=\(hex(r.rip)) rflags=\(hex(r.rflags)) mode=\(mode) cpl=\(s.cs.selector & 3)
        cs=\(String(s.cs.selector, radix: 16)) base \(hex(s.cs.base)) ss=\(String(s.ss.selector, radix: 16)) ds=\(String(s.ds.selector, radix: 16))
        cr0=\(hex(s.cr0)) cr2=\(hex(s.cr2)) cr3=\(hex(s.cr3)) cr4=\(hex(s.cr4)) efer=\(hex(s.efer))
      """
  }
}
