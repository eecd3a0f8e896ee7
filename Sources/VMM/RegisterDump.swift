import KVM

/// A vCPU's registers in the layout of QEMU's `info registers`, so people and scripts
/// used to reading QEMU's dump can read ours.
public enum RegisterDump {
  /// The dump of `vcpu` (which must not be in `KVM_RUN`: park it first), lines ending in "\r\n".
  public static func text(of vcpu: KVMVCPU) -> String {
    guard let r = try? vcpu.registers(), let s = try? vcpu.specialRegisters() else {
      return "CPU#\(vcpu.id)\r\n(registers unavailable)\r\n"
    }
    let segments: [(String, Segment)] = [
      ("ES ", s.es), ("CS ", s.cs), ("SS ", s.ss), ("DS ", s.ds), ("FS ", s.fs), ("GS ", s.gs), ("LDT", s.ldt),
      ("TR ", s.tr),
    ]
    var lines = [
      "CPU#\(vcpu.id)",
      "RAX=\(hex(r.rax)) RBX=\(hex(r.rbx)) RCX=\(hex(r.rcx)) RDX=\(hex(r.rdx))",
      "RSI=\(hex(r.rsi)) RDI=\(hex(r.rdi)) RBP=\(hex(r.rbp)) RSP=\(hex(r.rsp))",
      "R8 =\(hex(r.r8)) R9 =\(hex(r.r9)) R10=\(hex(r.r10)) R11=\(hex(r.r11))",
      "R12=\(hex(r.r12)) R13=\(hex(r.r13)) R14=\(hex(r.r14)) R15=\(hex(r.r15))",
      "RIP=\(hex(r.rip)) RFL=\(hex(r.rflags, width: 8)) [\(flagLetters(r.rflags))] CPL=\(s.cs.dpl)",
    ]
    for (name, segment) in segments {
      lines.append(
        "\(name)=\(hex(UInt64(segment.selector), width: 4)) \(hex(segment.base)) "
          + "\(hex(UInt64(segment.limit), width: 8)) \(hex(UInt64(attributes(segment)), width: 8))")
    }
    lines.append("GDT=     \(hex(s.gdt.base)) \(hex(UInt64(s.gdt.limit), width: 8))")
    lines.append("IDT=     \(hex(s.idt.base)) \(hex(UInt64(s.idt.limit), width: 8))")
    lines.append(
      "CR0=\(hex(s.cr0, width: 8)) CR2=\(hex(s.cr2)) CR3=\(hex(s.cr3)) CR4=\(hex(s.cr4, width: 8))")
    lines.append("EFER=\(hex(s.efer))")
    return lines.joined(separator: "\r\n") + "\r\n"
  }

  /// Descriptor attribute bits where QEMU shows them (bits 8–23 of the descriptor's high word).
  static func attributes(_ segment: Segment) -> UInt32 {
    var value = UInt32(segment.type & 0xF) << 8
    value |= UInt32(segment.s & 1) << 12
    value |= UInt32(segment.dpl & 3) << 13
    value |= UInt32(segment.present & 1) << 15
    value |= UInt32(segment.avl & 1) << 20
    value |= UInt32(segment.l & 1) << 21
    value |= UInt32(segment.db & 1) << 22
    value |= UInt32(segment.g & 1) << 23
    return value
  }

  /// QEMU's flag letters: D O ... S Z - A - P - C, '-' where clear.
  static func flagLetters(_ flags: UInt64) -> String {
    let bits: [(Int, Character)] = [(10, "D"), (11, "O"), (7, "S"), (6, "Z"), (4, "A"), (2, "P"), (0, "C")]
    return String(bits.map { flags & (1 << UInt64($0.0)) != 0 ? $0.1 : "-" })
  }

  static func hex(_ value: UInt64, width: Int = 16) -> String {
    let digits = String(value, radix: 16)
    return String(repeating: "0", count: max(0, width - digits.count)) + digits
  }
}
