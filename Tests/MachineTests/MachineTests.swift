import GuestMemory
import KVM
import Testing

@testable import Machine

@Suite("x86 machine setup")
struct MachineTests {
  @Test("GDT entries match the architectural encodings")
  func gdtEntries() {
    #expect(SegmentDescriptor.gdtEntry(SegmentDescriptor.code64(selector: 0x10)) == 0x00AF_9B00_0000_FFFF)
    #expect(SegmentDescriptor.gdtEntry(SegmentDescriptor.data(selector: 0x18)) == 0x00CF_9300_0000_FFFF)
    #expect(SegmentDescriptor.gdtEntry(SegmentDescriptor.code32(selector: 0x08)) == 0x00CF_9B00_0000_FFFF)
    #expect(SegmentDescriptor.gdtEntry(SegmentDescriptor.code64(selector: 0x2B, dpl: 3)) == 0x00AF_FB00_0000_FFFF)
  }

  @Test("Identity page tables map 4 GiB with user-accessible 2 MiB pages")
  func pageTables() throws {
    let memory = try GuestMemory(ranges: [(0, 1 << 20)])
    let cr3 = try IdentityPageTables.write(to: memory, at: 0x1000)
    #expect(cr3 == 0x1000)
    let pdpt = try memory.load(UInt64.self, at: 0x1000)
    #expect(pdpt == 0x2000 | 0x7)
    for gigabyte in 0..<UInt64(4) {
      let directory = try memory.load(UInt64.self, at: 0x2000 + gigabyte * 8)
      #expect(directory == (0x3000 + gigabyte * 0x1000) | 0x7)
      // The entry for 0xFEE00000 (LAPIC) and for the first and last page of each gigabyte.
      for entry: UInt64 in [0, 511] {
        let value = try memory.load(UInt64.self, at: (directory & ~0xFFF) + entry * 8)
        #expect(value == (gigabyte << 30 | entry << 21) | 0x87)
      }
    }
  }

  @Test("RAM below 3 GiB stays in one range; the rest moves above 4 GiB")
  func ramLayout() {
    #expect(X86MemoryMap.ramRanges(size: 256 << 20).map(\.size) == [256 << 20])
    let large = X86MemoryMap.ramRanges(size: 4 << 30)
    #expect(large.map(\.guestAddress) == [0, 0x1_0000_0000])
    #expect(large.map(\.size) == [0xC000_0000, 1 << 30])
  }

  @Test("CPUID policy sets each vCPU's APIC ids and the logical count")
  func cpuidPolicy() {
    let indexed = UInt32(1)  // KVM_CPUID_FLAG_SIGNIFCANT_INDEX
    let supported = CPUIDTable(entries: [
      CPUIDEntry(function: 1, eax: 0x806F8, ebx: 0xFF00_0800, ecx: 0, edx: 0),
      CPUIDEntry(function: 0xB, index: 0, flags: indexed, eax: 0, ebx: 1, ecx: 0x100, edx: 77),
      CPUIDEntry(function: 0xB, index: 1, flags: indexed, eax: 0, ebx: 1, ecx: 0x201, edx: 77),
    ])
    let table = CPUIDPolicy(supported: supported, cpuCount: 4).table(forAPICID: 3)
    #expect(table[1]?.ebx == 0x0304_0800)
    #expect(table[1].map { $0.edx & (1 << 28) != 0 } == true)
    #expect(table[1].map { $0.ecx & (1 << 31) != 0 } == true, "hypervisor bit")
    #expect(table.entries.filter { $0.function == 0xB }.allSatisfy { $0.edx == 3 })
  }

  @Test("A flat image larger than the RAM above 0x10000 is refused")
  func flatTooLarge() throws {
    let memory = try GuestMemory(ranges: [(0, 0x20000)])
    #expect(FlatBinaryBoot.capacity(ramBelowHole: 0x20000) == 0x10000)
    #expect(throws: BootError.self) { try FlatBinaryBoot.load([UInt8](repeating: 0x90, count: 0x10001), into: memory) }
    try FlatBinaryBoot.load([UInt8](repeating: 0x90, count: 0x10000), into: memory)
    #expect(try memory.load(UInt8.self, at: 0x1FFFF) == 0x90)
  }
}
