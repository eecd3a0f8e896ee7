import GuestMemory
import Testing

@testable import Machine

@Suite("ELF kernels and PVH")
struct ELFKernelTests {
  /// An ELF64 x86-64 file: one PT_LOAD (16 bytes at 16 MiB, 32 in memory) and a PT_NOTE with the PVH entry.
  static func elf(machine: UInt16 = 62, withPVHNote: Bool = true) -> [UInt8] {
    var file = [UInt8](repeating: 0, count: 0x200)
    func put<T: FixedWidthInteger>(_ value: T, at offset: Int) {
      withUnsafeBytes(of: value.littleEndian) { file.replaceSubrange(offset..<offset + $0.count, with: $0) }
    }
    file.replaceSubrange(0..<4, with: [0x7F, 0x45, 0x4C, 0x46])
    file[4] = 2  // 64-bit
    file[5] = 1  // little-endian
    put(UInt16(2), at: 16)  // ET_EXEC
    put(machine, at: 18)
    put(UInt64(0xFFFF_FFFF_8100_0000), at: 24)  // entry (virtual)
    put(UInt64(64), at: 32)  // program headers at 64
    put(UInt16(56), at: 54)
    put(UInt16(withPVHNote ? 2 : 1), at: 56)
    // PT_LOAD
    put(UInt32(1), at: 64)
    put(UInt64(0x100), at: 64 + 8)
    put(UInt64(0x100_0000), at: 64 + 24)
    put(UInt64(16), at: 64 + 32)
    put(UInt64(32), at: 64 + 40)
    for index in 0..<16 { file[0x100 + index] = UInt8(0xB0 + index) }
    if withPVHNote {
      put(UInt32(4), at: 120)  // PT_NOTE
      put(UInt64(0x180), at: 120 + 8)
      put(UInt64(20), at: 120 + 32)
      put(UInt32(4), at: 0x180)  // name size ("Xen\0")
      put(UInt32(4), at: 0x184)  // description size
      put(UInt32(18), at: 0x188)  // XEN_ELFNOTE_PHYS32_ENTRY
      file.replaceSubrange(0x18C..<0x190, with: Array("Xen\0".utf8))
      put(UInt32(0x100_0040), at: 0x190)
    }
    return file
  }

  @Test("Segments, the physical entry and the PVH note are read")
  func parses() throws {
    let kernel = try ELFKernel(Self.elf(), name: "vmlinux")
    #expect(
      kernel.segments == [ELFKernel.Segment(physicalAddress: 0x100_0000, fileRange: 0x100..<0x110, memorySize: 32)])
    #expect(kernel.entry == 0x100_0000)
    #expect(kernel.pvhEntry == 0x100_0040)
    #expect(try ELFKernel(Self.elf(withPVHNote: false), name: "v").pvhEntry == nil)
  }

  @Test("An ELF for another architecture, or a truncated one, is refused with the reason")
  func refuses() {
    #expect(throws: LinuxBootError.self) { try ELFKernel(Self.elf(machine: 183), name: "arm64") }
    #expect(throws: LinuxBootError.self) { try ELFKernel(Array(Self.elf().prefix(0x108)), name: "cut") }
    do {
      _ = try ELFKernel(Self.elf(machine: 183), name: "Image")
    } catch {
      #expect(error.description.contains("not x86-64"))
    }
  }

  @Test("PVH loading: segments with zeroed bss, start_info with magic, cmdline, initrd module and memory map")
  func pvhLoad() throws {
    let memory = try GuestMemory(ranges: [(0, 64 << 20)])
    try memory.store(UInt64.max, at: 0x100_0010)  // stale bytes where the bss goes
    let entry = try LinuxBoot.load(
      elf: try ELFKernel(Self.elf(), name: "v"), initrd: [1, 2, 3], commandLine: "console=ttyS0", memory: memory,
      e820: .standard(ramRanges: [(0, 64 << 20)]), rsdpAddress: 0xE0000)
    #expect(entry == .pvh(0x100_0040))
    #expect(try memory.load(UInt8.self, at: 0x100_0000) == 0xB0)
    #expect(try memory.load(UInt64.self, at: 0x100_0010) == 0, "bss zeroed")
    #expect(try memory.load(UInt32.self, at: PVHBoot.startInfo) == 0x336E_C578)
    #expect(try memory.load(UInt32.self, at: PVHBoot.startInfo + 12) == 1, "one module: the initrd")
    #expect(try memory.load(UInt64.self, at: PVHBoot.startInfo + 24) == LinuxBoot.commandLineAddress)
    #expect(try memory.load(UInt64.self, at: PVHBoot.startInfo + 32) == 0xE0000)
    #expect(try memory.load(UInt32.self, at: PVHBoot.startInfo + 48) == 4, "memory map entries")
    let module = try memory.load(UInt64.self, at: PVHBoot.startInfo + 16)
    #expect(try memory.load(UInt64.self, at: module + 8) == 3)
  }
}
