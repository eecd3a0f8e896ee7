import Devices
import Machine
import Testing

@testable import VMM

/// The ACPI tables handed to firmware through fw_cfg: the `etc/table-loader` script run as
/// SeaBIOS runs it (allocate, add pointer, add checksum), into memory of a test's choosing,
/// must leave tables a guest can walk from the RSDP — every checksum right, every pointer on
/// a table with the signature it should have — wherever the firmware put them.
@Suite("ACPI through fw_cfg")
struct FirmwareACPITests {
  struct LoaderFailure: Error, CustomStringConvertible { let description: String }

  /// A flat guest memory and the firmware's two allocators (high and F segment).
  struct Memory {
    var bytes = [UInt8](repeating: 0, count: 1 << 20)
    var high: Int
    var fSegment = 0xF_0000
    var placed: [String: Int] = [:]

    func u32(_ at: Int) -> UInt32 { (0..<4).reduce(0) { $0 | UInt32(bytes[at + $1]) << (8 * $1) } }
    func u64(_ at: Int) -> UInt64 { (0..<8).reduce(0) { $0 | UInt64(bytes[at + $1]) << (8 * $1) } }
    func signature(_ at: Int) -> String { String(decoding: bytes[at..<at + 4], as: UTF8.self) }
    func sumsToZero(_ at: Int, _ length: Int) -> Bool { bytes[at..<at + length].reduce(0, &+) == 0 }
  }

  /// Runs `contents`' loader script the way SeaBIOS's romfile_loader does.
  static func runLoader(_ contents: FirmwareConfigContents, highStart: Int) throws -> Memory {
    var memory = Memory(high: highStart)
    func file(_ name: String) throws -> [UInt8] {
      guard let key = contents.key(of: name), let bytes = contents.items[key] else {
        throw LoaderFailure(description: "no fw_cfg file \(name)")
      }
      return bytes
    }
    func name(_ field: ArraySlice<UInt8>) -> String {
      String(decoding: field.prefix { $0 != 0 }, as: UTF8.self)
    }
    func le(_ bytes: [UInt8], _ at: Int, _ size: Int) -> Int {
      (0..<size).reduce(0) { $0 | Int(bytes[at + $1]) << (8 * $1) }
    }
    let script = try file("etc/table-loader")
    #expect(script.count % 128 == 0)
    for start in stride(from: 0, to: script.count, by: 128) {
      let command = Array(script[start..<start + 128])
      switch le(command, 0, 4) {
      case 1:
        let target = name(command[4..<60])
        let align = le(command, 60, 4)
        let data = try file(target)
        #expect(align > 0 && align & (align - 1) == 0)
        let zone = command[64]
        let address: Int
        if zone == 1 {
          address = (memory.high + align - 1) / align * align
          memory.high = address + data.count
        } else {
          #expect(zone == 2, "zone \(zone)")
          address = (memory.fSegment + align - 1) / align * align
          memory.fSegment = address + data.count
          #expect(memory.fSegment <= 0x10_0000, "the F segment holds the RSDP")
        }
        memory.bytes.replaceSubrange(address..<address + data.count, with: data)
        memory.placed[target] = address
      case 2:
        let destination = name(command[4..<60])
        let source = name(command[60..<116])
        let offset = le(command, 116, 4)
        let size = Int(command[120])
        guard let base = memory.placed[destination], let target = memory.placed[source] else {
          throw LoaderFailure(description: "pointer between files not yet allocated: \(destination) → \(source)")
        }
        #expect(offset + size <= (try file(destination)).count)
        let value = le(memory.bytes, base + offset, size) + target
        for index in 0..<size { memory.bytes[base + offset + index] = UInt8(truncatingIfNeeded: value >> (8 * index)) }
      case 3:
        let target = name(command[4..<60])
        guard let base = memory.placed[target] else { throw LoaderFailure(description: "checksum in \(target) first") }
        let offset = le(command, 60, 4)
        let begin = le(command, 64, 4)
        let length = le(command, 68, 4)
        #expect(begin + length <= (try file(target)).count)
        memory.bytes[base + offset] &-= memory.bytes[base + begin..<base + begin + length].reduce(0, &+)
      case let other:
        throw LoaderFailure(description: "unknown loader command \(other)")
      }
    }
    return memory
  }

  @Test(
    "The loader script installs tables a guest can walk from the RSDP, wherever the firmware allocates them",
    arguments: [(1, 0x1_0000), (4, 0x7_1234)])
  func loaderInstallsWalkableTables(cpus: Int, highStart: Int) throws {
    let contents = FirmwareConfigContents.machine(
      cpuCount: cpus, ranges: [(0, 64 << 20)], acpi: RelocatableACPITables(cpuCount: cpus, pci: true))
    let memory = try Self.runLoader(contents, highStart: highStart)
    let rsdp = try #require(memory.placed["etc/acpi/rsdp"])
    #expect(rsdp >= 0xF_0000 && rsdp % 16 == 0)
    #expect(memory.signature(rsdp) == "RSD ", "RSDP signature")
    #expect(memory.sumsToZero(rsdp, 20) && memory.sumsToZero(rsdp, 36), "both RSDP checksums")
    let xsdt = Int(memory.u64(rsdp + 24))
    #expect(memory.signature(xsdt) == "XSDT")
    #expect(memory.sumsToZero(xsdt, Int(memory.u32(xsdt + 4))))
    var found: [String: Int] = [:]
    for entry in stride(from: xsdt + 36, to: xsdt + Int(memory.u32(xsdt + 4)), by: 8) {
      let table = Int(memory.u64(entry))
      #expect(memory.sumsToZero(table, Int(memory.u32(table + 4))), "\(memory.signature(table)) checksum")
      found[memory.signature(table)] = table
    }
    #expect(Set(found.keys) == ["FACP", "APIC", "MCFG"])
    let fadt = try #require(found["FACP"])
    let dsdt = Int(memory.u64(fadt + 140))
    let facs = Int(memory.u64(fadt + 132))
    #expect(Int(memory.u32(fadt + 40)) == dsdt && Int(memory.u32(fadt + 36)) == facs)
    #expect(memory.signature(dsdt) == "DSDT" && memory.sumsToZero(dsdt, Int(memory.u32(dsdt + 4))))
    #expect(memory.signature(facs) == "FACS" && facs % 64 == 0, "the FACS is 64-byte aligned")
    // The MADT lists one enabled local APIC per CPU.
    let madt = try #require(found["APIC"])
    var processors = 0
    var at = madt + 44
    while at < madt + Int(memory.u32(madt + 4)) {
      if memory.bytes[at] == 0 { processors += 1 }
      at += max(Int(memory.bytes[at + 1]), 2)
    }
    #expect(processors == cpus)
  }

  @Test("Placed by skvm itself (direct boot), the same tables carry the same bytes as the loader leaves them")
  func directAndLoadedAgree() throws {
    let relocatable = RelocatableACPITables(cpuCount: 2, pci: true)
    let direct = ACPITables(relocatable, base: 0xE_0000)
    let contents = FirmwareConfigContents.machine(cpuCount: 2, ranges: [(0, 64 << 20)], acpi: relocatable)
    // With the high allocator where skvm puts the tables (right after the RSDP).
    let memory = try Self.runLoader(contents, highStart: 0xE_0040)
    #expect(memory.placed["etc/acpi/tables"] == 0xE_0040)
    let rsdp = try #require(memory.placed["etc/acpi/rsdp"])
    #expect(Array(memory.bytes[rsdp..<rsdp + 36]) == Array(direct.bytes[0..<36]))
    #expect(Array(memory.bytes[0xE_0040..<0xE_0000 + direct.bytes.count]) == Array(direct.bytes[0x40...]))
  }
}
