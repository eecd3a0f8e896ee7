import GuestMemory
import KVM

/// How a flat binary is entered.
public enum FlatEntryMode: String, Sendable, Codable, CaseIterable {
  /// 16-bit real mode at CS=0x1000, IP=0 (kvmtool's convention), SP=0x8000.
  case real
  /// 64-bit long mode at the load address, ring 0, with the low 4 GiB identity-mapped.
  case long
}

/// Loads a flat binary at 0x10000 and points the boot vCPU at it.
///
/// Long-mode entry state: CS=0x10 (64-bit code), DS/ES/FS/GS/SS=0x18, a GDT at
/// 0x500, identity page tables at 0x1000 (2 MiB pages, user-accessible),
/// RSP=0x10000 (growing down), RDI = number of vCPUs, RSI = bytes of RAM below
/// the MMIO hole, interrupts disabled. Other vCPUs wait for INIT/SIPI as on
/// real hardware.
public enum FlatBinaryBoot {
  /// The flat binary's load address.
  public static let loadAddress = X86MemoryMap.flatLoadAddress
  /// Selectors of the boot GDT (the Linux boot protocol's __BOOT_CS/__BOOT_DS).
  public static let codeSelector: UInt16 = 0x10
  public static let dataSelector: UInt16 = 0x18
  /// Real-mode stack pointer (kvmtool's convention).
  public static let realModeStackPointer: UInt64 = 0x8000

  /// The largest flat binary that fits in `memory` at the load address.
  public static func capacity(ramBelowHole: UInt64) -> UInt64 {
    ramBelowHole > loadAddress ? ramBelowHole - loadAddress : 0
  }

  /// Copies `image` into guest memory at the load address.
  public static func load(_ image: [UInt8], into memory: GuestMemory) throws(BootError) {
    let available = capacity(ramBelowHole: memory.regions.first?.size ?? 0)
    guard UInt64(image.count) <= available else {
      throw BootError.imageTooLarge(size: UInt64(image.count), available: available)
    }
    do {
      try memory.write(image, to: loadAddress)
    } catch {
      throw BootError.memory(error)
    }
  }

  /// Sets the boot vCPU's registers for `mode`.
  public static func configureBootCPU(
    _ vcpu: KVMVCPU, mode: FlatEntryMode, memory: GuestMemory, cpuCount: Int
  ) throws(BootError) {
    do {
      var special = try vcpu.specialRegisters()
      var registers = Registers()
      registers.rflags = ControlRegisters.rflagsReserved
      switch mode {
      case .real:
        let selector = UInt16(loadAddress >> 4)
        special.cs = SegmentDescriptor.realMode(selector: selector, code: true)
        let data = SegmentDescriptor.realMode(selector: selector, code: false)
        (special.ds, special.es, special.fs, special.gs, special.ss) = (data, data, data, data, data)
        registers.rip = 0
        registers.rsp = realModeStackPointer
      case .long:
        try LongModeSetup.apply(to: &special, memory: memory, codeSelector: codeSelector, dataSelector: dataSelector)
        registers.rip = loadAddress
        registers.rsp = loadAddress
        registers.rdi = UInt64(cpuCount)
        registers.rsi = memory.regions.first?.size ?? 0
      }
      try vcpu.setSpecialRegisters(special)
      try vcpu.setRegisters(registers)
    } catch let error as KVMError {
      throw BootError.kvm(error)
    } catch let error as GuestMemoryError {
      throw BootError.memory(error)
    } catch {
      throw BootError.kvm(KVMError("vCPU setup", errno: 0, detail: "\(error)"))
    }
  }
}

/// Puts a vCPU straight into 64-bit long mode: boot GDT, identity page tables, paging on.
public enum LongModeSetup {
  public static func apply(
    to special: inout SpecialRegisters, memory: GuestMemory, codeSelector: UInt16, dataSelector: UInt16
  ) throws(GuestMemoryError) {
    let code = SegmentDescriptor.code64(selector: codeSelector)
    let data = SegmentDescriptor.data(selector: dataSelector)
    let gdt = X86MemoryMap.bootGDT
    let entryCount = Int(max(codeSelector, dataSelector) / 8) + 1
    for index in 0..<entryCount {
      try memory.store(UInt64(0), at: gdt + UInt64(index * 8))
    }
    try memory.store(SegmentDescriptor.gdtEntry(code), at: gdt + UInt64(codeSelector))
    try memory.store(SegmentDescriptor.gdtEntry(data), at: gdt + UInt64(dataSelector))
    special.gdt.base = gdt
    special.gdt.limit = UInt16(entryCount * 8 - 1)
    special.cs = code
    (special.ds, special.es, special.fs, special.gs, special.ss) = (data, data, data, data, data)
    special.cr3 = try IdentityPageTables.write(to: memory, at: X86MemoryMap.bootPageTables)
    special.cr4 =
      ControlRegisters.cr4PhysicalAddressExtension | ControlRegisters.cr4OSFXSR
      | ControlRegisters.cr4OSXMMException
    special.cr0 =
      ControlRegisters.cr0ProtectionEnable | ControlRegisters.cr0MonitorCoprocessor
      | ControlRegisters.cr0ExtensionType | ControlRegisters.cr0NumericError | ControlRegisters.cr0WriteProtect
      | ControlRegisters.cr0Paging
    special.efer = ControlRegisters.eferLongModeEnable | ControlRegisters.eferLongModeActive
  }
}

/// A guest image could not be loaded or a vCPU could not be pointed at it.
public enum BootError: Error, CustomStringConvertible {
  case imageTooLarge(size: UInt64, available: UInt64)
  case memory(GuestMemoryError)
  case kvm(KVMError)

  public var description: String {
    switch self {
    case .imageTooLarge(let size, let available):
      "the image is \(size) bytes but only \(available) bytes of RAM lie above the load address 0x\(String(FlatBinaryBoot.loadAddress, radix: 16)); give the guest more memory (--memory)"
    case .memory(let error): "loading the image: \(error)"
    case .kvm(let error): "setting up the boot vCPU: \(error)"
    }
  }
}
