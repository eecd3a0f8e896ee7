import GuestMemory
import Testing

@testable import Machine

@Suite("Linux boot")
struct LinuxBootTests {
  /// A minimal well-formed bzImage: boot sector, one setup sector, 16 bytes of "kernel".
  static func bzImage(protocolVersion: UInt16 = 0x020F, xloadflags: UInt16 = 0x1, initSize: UInt32 = 0x10_0000)
    -> [UInt8]
  {
    var image = [UInt8](repeating: 0, count: 2 * 512 + 16)
    func put<T: FixedWidthInteger>(_ value: T, at offset: Int) {
      withUnsafeBytes(of: value.littleEndian) { image.replaceSubrange(offset..<offset + $0.count, with: $0) }
    }
    put(UInt8(1), at: 0x1F1)  // setup_sects
    put(UInt32(1), at: 0x1F4)  // syssize in 16-byte paragraphs
    put(UInt16(0xAA55), at: 0x1FE)
    put(UInt8(0x66), at: 0x201)  // jump: header ends at 0x268
    put(UInt32(0x5372_6448), at: 0x202)  // "HdrS"
    put(protocolVersion, at: 0x206)
    put(UInt8(0x01), at: 0x211)  // LOADED_HIGH
    put(UInt32(0x7FFF_FFFF), at: 0x22C)  // initrd_addr_max
    put(xloadflags, at: 0x236)
    put(UInt32(255), at: 0x238)  // cmdline_size
    put(initSize, at: 0x260)
    for index in 0..<16 { image[1024 + index] = UInt8(0xA0 + index) }
    return image
  }

  @Test("A well-formed bzImage parses; its kernel is what follows the setup sectors")
  func parses() throws {
    let kernel = try BzImage(Self.bzImage(), name: "k")
    #expect(kernel.protocolVersion == 0x020F)
    #expect(kernel.setupSectors == 1)
    #expect(Array(kernel.kernel) == (0..<16).map { UInt8(0xA0 + $0) })
    #expect(kernel.headerRange == 0x1F1..<0x268)
  }

  static let badImages: [([UInt8], String)] = [
    ((0..<4096).map { UInt8(truncatingIfNeeded: $0 &* 7919) }, "no Linux boot sector signature"),
    (Array(bzImage().prefix(1030)), "truncated"),
    (bzImage(protocolVersion: 0x0206), "older than 2.12"),
    (bzImage(xloadflags: 0), "no 64-bit entry point"),
    ([1, 2, 3], "only 3 bytes"),
  ]

  @Test("Not a kernel, an ELF, a truncated or too old kernel: each refused with the reason")
  func refusesBadImages() {
    for (bytes, phrase) in Self.badImages {
      do {
        _ = try BzImage(bytes, name: "guest.img")
        Issue.record("accepted: \(phrase)")
      } catch {
        #expect(error.description.contains("guest.img") && error.description.contains(phrase), "\(error)")
      }
    }
  }

  @Test("Loading places the kernel at 1 MiB, the initrd at the top of RAM and fills the zero page")
  func loads() throws {
    let memory = try GuestMemory(ranges: [(0, 64 << 20)])
    let kernel = try BzImage(Self.bzImage(), name: "k")
    let initrd = [UInt8](repeating: 0x5A, count: 10_000)
    let placement = try LinuxBoot.load(
      kernel: kernel, initrd: initrd, commandLine: "console=ttyS0", memory: memory,
      e820: .standard(ramRanges: [(0, 64 << 20)]), rsdpAddress: 0xE0000)
    #expect(try memory.load(UInt8.self, at: 0x10_0000) == 0xA0)
    let initrdAddress = try #require(placement.initrdAddress)
    #expect(initrdAddress % 4096 == 0 && initrdAddress + 10_000 <= 64 << 20 && initrdAddress >= placement.kernelEnd)
    #expect(try memory.load(UInt32.self, at: 0x7000 + 0x218) == UInt32(initrdAddress))
    #expect(try memory.load(UInt32.self, at: 0x7000 + 0x21C) == 10_000)
    #expect(try memory.load(UInt32.self, at: 0x7000 + 0x228) == 0x2_0000)
    #expect(try memory.bytes(at: 0x2_0000, length: 14) == Array("console=ttyS0\0".utf8))
    #expect(try memory.load(UInt8.self, at: 0x7000 + 0x210) == 0xFF, "type_of_loader")
    #expect(try memory.load(UInt64.self, at: 0x7000 + 0x70) == 0xE0000, "acpi_rsdp_addr")
    #expect(try memory.load(UInt8.self, at: 0x7000 + 0x1E8) == 4, "e820 entries")
    #expect(try memory.load(UInt32.self, at: 0x7000 + 0x202) == 0x5372_6448, "setup header copied")
  }

  @Test("A command line longer than the kernel takes is refused with both lengths")
  func longCommandLine() throws {
    let memory = try GuestMemory(ranges: [(0, 64 << 20)])
    #expect(throws: LinuxBootError.commandLineTooLong(length: 300, maximum: 255)) {
      try LinuxBoot.load(
        kernel: try BzImage(Self.bzImage(), name: "k"), initrd: nil,
        commandLine: String(repeating: "x", count: 300), memory: memory, e820: E820Map(entries: []),
        rsdpAddress: nil)
    }
  }

  @Test("Too little memory for the kernel, or for the initrd, says which and how much")
  func tooLittleMemory() throws {
    let small = try GuestMemory(ranges: [(0, 8 << 20)])
    do {
      try LinuxBoot.load(
        kernel: try BzImage(Self.bzImage(initSize: 16 << 20), name: "k"), initrd: nil, commandLine: "",
        memory: small, e820: E820Map(entries: []), rsdpAddress: nil)
      Issue.record("a kernel larger than RAM was accepted")
    } catch {
      #expect(error.description.contains("the kernel") && error.description.contains("--memory"))
    }
    do {
      try LinuxBoot.load(
        kernel: try BzImage(Self.bzImage(initSize: 4 << 20), name: "k"),
        initrd: [UInt8](repeating: 1, count: 6 << 20), commandLine: "", memory: small, e820: E820Map(entries: []),
        rsdpAddress: nil)
      Issue.record("an initrd that does not fit was accepted")
    } catch {
      #expect(error.description.contains("the initrd"))
    }
  }

  @Test("The e820 map has the PC holes and splits RAM around 4 GiB")
  func e820() {
    let map = E820Map.standard(ramRanges: [(0, 0xC000_0000), (0x1_0000_0000, 1 << 30)])
    #expect(map.entries.map(\.address) == [0, 0x9_FC00, 0xE_0000, 0x10_0000, 0x1_0000_0000])
    #expect(map.entries.map(\.kind) == [.ram, .reserved, .reserved, .ram, .ram])
    #expect(map.entries[3].size == 0xC000_0000 - 0x10_0000)
  }
}
