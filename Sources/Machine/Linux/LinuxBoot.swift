import GuestMemory
import KVM

/// Loads a bzImage, initrd and command line into guest memory and points the boot
/// vCPU at the kernel's 64-bit entry, following the 64-bit boot protocol.
///
/// Layout: zero page at 0x7000, command line at 0x20000, kernel at 1 MiB (entry
/// at +0x200), initrd at the top of low RAM below `initrd_addr_max`; the boot GDT
/// and identity page tables of `LongModeSetup` below 0x7000; RSP at 0x8FF0.
public enum LinuxBoot {
  public static let zeroPage: UInt64 = 0x7000
  public static let commandLineAddress: UInt64 = 0x2_0000
  public static let kernelAddress: UInt64 = 0x10_0000
  public static let stackPointer: UInt64 = 0x8FF0

  /// Zero-page offsets (Documentation/arch/x86/zero-page.rst).
  enum ZeroPage {
    static let acpiRSDPAddress = 0x070
    static let extRamdiskImage = 0x0C0
    static let extRamdiskSize = 0x0C4
    static let extCommandLinePointer = 0x0C8
    static let e820Entries = 0x1E8
    static let videoMode = 0x1FA
    static let typeOfLoader = 0x210
    static let loadFlags = 0x211
    static let ramdiskImage = 0x218
    static let ramdiskSize = 0x21C
    static let heapEndPointer = 0x224
    static let commandLinePointer = 0x228
    static let e820Table = 0x2D0
    static let e820MaximumEntries = 128
  }

  /// What was placed where, for messages and tests.
  public struct Placement: Sendable, Equatable {
    public var kernelEnd: UInt64
    public var initrdAddress: UInt64?
    public var initrdSize: UInt64
  }

  /// Loads everything and returns where it went.
  @discardableResult
  public static func load(
    kernel: BzImage, initrd: [UInt8]?, commandLine: String, memory: GuestMemory, e820: E820Map,
    rsdpAddress: UInt64?
  ) throws(LinuxBootError) -> Placement {
    let commandLineBytes = Array(commandLine.utf8)
    guard commandLineBytes.count <= Int(kernel.commandLineMaximum) else {
      throw .commandLineTooLong(length: commandLineBytes.count, maximum: Int(kernel.commandLineMaximum))
    }
    guard let low = memory.regions.first else { throw .memory("the guest has no RAM") }
    let kernelImage = Array(kernel.kernel)
    // The kernel decompresses and runs in place: it needs init_size bytes from its load address.
    let kernelEnd = kernelAddress + max(UInt64(kernel.initSize), UInt64(kernelImage.count))
    guard kernelEnd <= low.end else {
      throw .doesNotFit(
        "the kernel (with its init_size)", size: kernelEnd - kernelAddress,
        available: low.end > kernelAddress ? low.end - kernelAddress : 0)
    }
    var placement = Placement(kernelEnd: kernelEnd, initrdAddress: nil, initrdSize: 0)
    do {
      try memory.write(kernelImage, to: kernelAddress)
      try memory.write(commandLineBytes + [0], to: commandLineAddress)
      if let initrd, !initrd.isEmpty {
        let ceiling = min(low.end, UInt64(kernel.initrdAddressMaximum) + 1)
        let size = UInt64(initrd.count)
        let address = ceiling >= size ? (ceiling - size) & ~0xFFF : 0
        guard ceiling >= size, address >= kernelEnd else {
          throw LinuxBootError.doesNotFit(
            "the initrd", size: size, available: ceiling > kernelEnd ? ceiling - kernelEnd : 0)
        }
        try memory.write(initrd, to: address)
        placement.initrdAddress = address
        placement.initrdSize = size
      }
      try writeZeroPage(
        header: kernel.bytes[kernel.headerRange], loadFlags: kernel.bytes[0x211], placement: placement, memory: memory,
        e820: e820, rsdpAddress: rsdpAddress)
    } catch let error as LinuxBootError {
      throw error
    } catch {
      throw .memory("\(error)")
    }
    return placement
  }

  private static func writeZeroPage(
    header: ArraySlice<UInt8>, loadFlags: UInt8, placement: Placement, memory: GuestMemory, e820: E820Map,
    rsdpAddress: UInt64?
  ) throws(GuestMemoryError) {
    var page = [UInt8](repeating: 0, count: 4096)
    page.replaceSubrange(header.startIndex..<header.endIndex, with: header)
    func put<T: FixedWidthInteger>(_ value: T, at offset: Int) {
      withUnsafeBytes(of: value.littleEndian) { page.replaceSubrange(offset..<offset + $0.count, with: $0) }
    }
    put(UInt16(0xFFFF), at: ZeroPage.videoMode)
    put(UInt8(0xFF), at: ZeroPage.typeOfLoader)  // an undefined boot loader
    put(loadFlags | 0x80, at: ZeroPage.loadFlags)  // CAN_USE_HEAP
    put(UInt16(0xFE00), at: ZeroPage.heapEndPointer)
    put(UInt32(truncatingIfNeeded: commandLineAddress), at: ZeroPage.commandLinePointer)
    put(UInt32(truncatingIfNeeded: commandLineAddress >> 32), at: ZeroPage.extCommandLinePointer)
    if let address = placement.initrdAddress {
      put(UInt32(truncatingIfNeeded: address), at: ZeroPage.ramdiskImage)
      put(UInt32(truncatingIfNeeded: placement.initrdSize), at: ZeroPage.ramdiskSize)
      put(UInt32(truncatingIfNeeded: address >> 32), at: ZeroPage.extRamdiskImage)
      put(UInt32(truncatingIfNeeded: placement.initrdSize >> 32), at: ZeroPage.extRamdiskSize)
    }
    if let rsdpAddress { put(rsdpAddress, at: ZeroPage.acpiRSDPAddress) }
    let entries = e820.entries.prefix(ZeroPage.e820MaximumEntries)
    put(UInt8(entries.count), at: ZeroPage.e820Entries)
    for (index, entry) in entries.enumerated() {
      let offset = ZeroPage.e820Table + index * 20
      put(entry.address, at: offset)
      put(entry.size, at: offset + 8)
      put(entry.kind.rawValue, at: offset + 16)
    }
    try memory.write(page, to: zeroPage)
  }

  /// How an ELF kernel is to be entered once loaded.
  public enum ELFEntry: Sendable, Equatable {
    /// PVH: 32-bit protected mode at this address, EBX = `hvm_start_info`.
    case pvh(UInt32)
    /// `startup_64` at this physical address, RSI = the zero page.
    case startup64(UInt64)
  }

  /// The longest command line an ELF kernel (which has no setup header to say) is given.
  public static let elfCommandLineMaximum = 2047

  /// Loads an ELF kernel's segments, the initrd and command line, and either `hvm_start_info`
  /// (PVH) or a zero page with a synthesised setup header; returns how to enter it.
  public static func load(
    elf kernel: ELFKernel, initrd: [UInt8]?, commandLine: String, memory: GuestMemory, e820: E820Map,
    rsdpAddress: UInt64?
  ) throws(LinuxBootError) -> ELFEntry {
    let commandLineBytes = Array(commandLine.utf8)
    guard commandLineBytes.count <= elfCommandLineMaximum else {
      throw .commandLineTooLong(length: commandLineBytes.count, maximum: elfCommandLineMaximum)
    }
    guard let low = memory.regions.first, kernel.end <= low.end else {
      throw .doesNotFit("the kernel's segments", size: kernel.end, available: memory.regions.first?.end ?? 0)
    }
    var placement = Placement(kernelEnd: kernel.end, initrdAddress: nil, initrdSize: 0)
    do {
      for segment in kernel.segments {
        try memory.write(Array(kernel.bytes[segment.fileRange]), to: segment.physicalAddress)
        let zeroed = segment.memorySize - UInt64(segment.fileRange.count)
        if zeroed > 0 {
          let tail = try memory.buffer(
            at: segment.physicalAddress + UInt64(segment.fileRange.count), length: Int(zeroed))
          tail.initializeMemory(as: UInt8.self, repeating: 0)
        }
      }
      try memory.write(commandLineBytes + [0], to: commandLineAddress)
      if let initrd, !initrd.isEmpty {
        let ceiling = min(low.end, 1 << 32)
        let size = UInt64(initrd.count)
        let address = ceiling >= size ? (ceiling - size) & ~0xFFF : 0
        guard ceiling >= size, address >= kernel.end else {
          throw LinuxBootError.doesNotFit(
            "the initrd", size: size, available: ceiling > kernel.end ? ceiling - kernel.end : 0)
        }
        try memory.write(initrd, to: address)
        placement.initrdAddress = address
        placement.initrdSize = size
      }
      if let entry = kernel.pvhEntry {
        try PVHBoot.writeStartInfo(
          memory: memory, commandLine: commandLineAddress,
          initrd: placement.initrdAddress.map { ($0, placement.initrdSize) }, e820: e820, rsdpAddress: rsdpAddress)
        return .pvh(entry)
      }
      try writeZeroPage(
        header: synthesizedHeader[...].dropFirst(0x1F1), loadFlags: 0x01, placement: placement, memory: memory,
        e820: e820, rsdpAddress: rsdpAddress)
      return .startup64(kernel.entry)
    } catch let error as LinuxBootError {
      throw error
    } catch {
      throw .memory("\(error)")
    }
  }

  /// A setup header for kernels loaded from ELF, which have none: what startup_64 reads.
  static let synthesizedHeader: [UInt8] = {
    var header = [UInt8](repeating: 0, count: 0x268)
    func put<T: FixedWidthInteger>(_ value: T, at offset: Int) {
      withUnsafeBytes(of: value.littleEndian) { header.replaceSubrange(offset..<offset + $0.count, with: $0) }
    }
    put(UInt16(0xAA55), at: 0x1FE)
    put(UInt32(0x5372_6448), at: 0x202)  // "HdrS"
    put(UInt16(0x020F), at: 0x206)
    put(UInt8(0x01), at: 0x211)  // LOADED_HIGH
    put(UInt32(0x7FFF_FFFF), at: 0x22C)  // initrd_addr_max
    put(UInt32(0x20_0000), at: 0x230)  // kernel_alignment
    put(UInt32(elfCommandLineMaximum), at: 0x238)
    return header
  }()

  /// Points the boot vCPU at `startup_64` of an ELF kernel, RSI = the zero page.
  public static func configureBootCPU(_ vcpu: KVMVCPU, memory: GuestMemory, entry: UInt64) throws(BootError) {
    try configureLongModeEntry(vcpu, memory: memory, rip: entry)
  }

  /// Points the boot vCPU at the kernel's 64-bit entry with RSI = the zero page.
  public static func configureBootCPU(_ vcpu: KVMVCPU, memory: GuestMemory) throws(BootError) {
    try configureLongModeEntry(vcpu, memory: memory, rip: kernelAddress + 0x200)
  }

  private static func configureLongModeEntry(_ vcpu: KVMVCPU, memory: GuestMemory, rip: UInt64) throws(BootError) {
    do {
      var special = try vcpu.specialRegisters()
      try LongModeSetup.apply(
        to: &special, memory: memory, codeSelector: FlatBinaryBoot.codeSelector,
        dataSelector: FlatBinaryBoot.dataSelector)
      try vcpu.setSpecialRegisters(special)
      var registers = Registers()
      registers.rflags = ControlRegisters.rflagsReserved
      registers.rip = rip
      registers.rsi = zeroPage
      registers.rsp = stackPointer
      try vcpu.setRegisters(registers)
    } catch let error as KVMError {
      throw .kvm(error)
    } catch let error as GuestMemoryError {
      throw .memory(error)
    } catch {
      throw .kvm(KVMError("vCPU setup", errno: 0, detail: "\(error)"))
    }
  }
}
