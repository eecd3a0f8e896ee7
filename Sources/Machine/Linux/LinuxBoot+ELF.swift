import GuestMemory

/// Loading an uncompressed ELF `vmlinux`: through its PVH note when it has one, else at
/// `startup_64` with a zero page whose setup header is synthesised.
extension LinuxBoot {
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
      try placeInitrd(initrd, below: min(low.end, 1 << 32), in: &placement, memory: memory)
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
}
