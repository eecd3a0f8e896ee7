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
      try placeInitrd(
        initrd, below: min(low.end, UInt64(kernel.initrdAddressMaximum) + 1), in: &placement, memory: memory)
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

  static func writeZeroPage(
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

  /// Writes the initrd page-aligned just below `ceiling` and above the kernel, recording it in `placement`.
  static func placeInitrd(
    _ initrd: [UInt8]?, below ceiling: UInt64, in placement: inout Placement, memory: GuestMemory
  ) throws {
    guard let initrd, !initrd.isEmpty else { return }
    let size = UInt64(initrd.count)
    let address = ceiling >= size ? (ceiling - size) & ~0xFFF : 0
    guard ceiling >= size, address >= placement.kernelEnd else {
      throw LinuxBootError.doesNotFit(
        "the initrd", size: size, available: ceiling > placement.kernelEnd ? ceiling - placement.kernelEnd : 0)
    }
    try memory.write(initrd, to: address)
    placement.initrdAddress = address
    placement.initrdSize = size
  }

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
