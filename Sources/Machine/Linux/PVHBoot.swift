import GuestMemory
import KVM

/// Boots an ELF kernel through its PVH entry: `hvm_start_info` (Xen's
/// include/public/arch-x86/hvm/start_info.h, version 1) describes the command line,
/// the initrd (as module 0), the memory map and the RSDP; the vCPU starts in flat
/// 32-bit protected mode with paging off and EBX pointing at the structure.
public enum PVHBoot {
  public static let startInfo: UInt64 = 0x7000
  static let moduleList: UInt64 = 0x7040
  static let memoryMap: UInt64 = 0x7080
  static let magic: UInt32 = 0x336E_C578

  /// Writes `hvm_start_info`, its module list and memory map.
  public static func writeStartInfo(
    memory: GuestMemory, commandLine: UInt64, initrd: (address: UInt64, size: UInt64)?, e820: E820Map,
    rsdpAddress: UInt64?
  ) throws(GuestMemoryError) {
    let entries = e820.entries.prefix(128)
    try memory.store(magic, at: startInfo)
    try memory.store(UInt32(1), at: startInfo + 4)  // version
    try memory.store(UInt32(0), at: startInfo + 8)  // flags
    try memory.store(UInt32(initrd == nil ? 0 : 1), at: startInfo + 12)  // nr_modules
    try memory.store(initrd == nil ? UInt64(0) : moduleList, at: startInfo + 16)
    try memory.store(commandLine, at: startInfo + 24)
    try memory.store(rsdpAddress ?? 0, at: startInfo + 32)
    try memory.store(memoryMap, at: startInfo + 40)
    try memory.store(UInt32(entries.count), at: startInfo + 48)
    try memory.store(UInt32(0), at: startInfo + 52)
    if let initrd {
      try memory.store(initrd.address, at: moduleList)
      try memory.store(initrd.size, at: moduleList + 8)
      try memory.store(UInt64(0), at: moduleList + 16)
      try memory.store(UInt64(0), at: moduleList + 24)
    }
    for (index, entry) in entries.enumerated() {
      let slot = memoryMap + UInt64(index * 24)
      try memory.store(entry.address, at: slot)
      try memory.store(entry.size, at: slot + 8)
      try memory.store(entry.kind.rawValue, at: slot + 16)
      try memory.store(UInt32(0), at: slot + 20)
    }
  }

  /// Flat 32-bit protected mode, paging off, EBX = start_info, at `entry`.
  public static func configureBootCPU(_ vcpu: KVMVCPU, entry: UInt32) throws(BootError) {
    do {
      var special = try vcpu.specialRegisters()
      special.cs = SegmentDescriptor.code32(selector: 0x08)
      let data = SegmentDescriptor.data(selector: 0x10)
      (special.ds, special.es, special.fs, special.gs, special.ss) = (data, data, data, data, data)
      special.tr.base = 0
      special.tr.limit = 0x67
      special.tr.type = 0xB  // busy 32-bit TSS
      special.tr.present = 1
      special.cr0 = ControlRegisters.cr0ProtectionEnable | ControlRegisters.cr0ExtensionType
      special.cr4 = 0
      special.efer = 0
      try vcpu.setSpecialRegisters(special)
      var registers = Registers()
      registers.rflags = ControlRegisters.rflagsReserved
      registers.rip = UInt64(entry)
      registers.rbx = startInfo
      try vcpu.setRegisters(registers)
    } catch {
      throw .kvm(error)
    }
  }
}
