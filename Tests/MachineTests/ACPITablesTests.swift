import Devices
import Testing

@testable import Machine

@Suite("ACPI tables")
struct ACPITablesTests {
  func table(_ tables: ACPITables, _ signature: String) -> ArraySlice<UInt8> {
    guard let address = tables.addresses[signature] else { return [] }
    let offset = Int(address - tables.base)
    let length = signature == "RSDP" ? 36 : Int(u32(tables.bytes, offset + 4))
    return tables.bytes[offset..<offset + length]
  }

  func u32(_ bytes: [UInt8], _ offset: Int) -> UInt32 {
    (0..<4).reduce(0) { $0 | UInt32(bytes[offset + $1]) << (8 * $1) }
  }

  func u64(_ bytes: some Collection<UInt8>, _ offset: Int) -> UInt64 {
    let array = Array(bytes)
    return (0..<8).reduce(0) { $0 | UInt64(array[offset + $1]) << (8 * $1) }
  }

  @Test("Every table sums to zero and has its signature and length", arguments: [1, 2, 4, 16])
  func checksums(cpus: Int) {
    let tables = ACPITables(cpuCount: cpus)
    for signature in ["DSDT", "FACP", "APIC", "XSDT"] {
      let bytes = table(tables, signature)
      #expect(Array(bytes.prefix(4)) == Array(signature.utf8))
      #expect(bytes.reduce(0, &+) == 0, "\(signature) checksum")
    }
    let rsdp = table(tables, "RSDP")
    #expect(Array(rsdp.prefix(8)) == Array("RSD PTR ".utf8))
    #expect(rsdp.prefix(20).reduce(0, &+) == 0, "RSDP ACPI 1.0 checksum")
    #expect(rsdp.reduce(0, &+) == 0, "RSDP extended checksum")
    #expect(tables.rsdpAddress % 16 == 0)
  }

  @Test("RSDP → XSDT → FADT and MADT; FADT → DSDT and FACS")
  func pointers() {
    let tables = ACPITables(cpuCount: 2)
    #expect(u64(table(tables, "RSDP"), 24) == tables.addresses["XSDT"])
    let xsdt = table(tables, "XSDT")
    #expect(u64(xsdt, 36) == tables.addresses["FACP"])
    #expect(u64(xsdt, 44) == tables.addresses["APIC"])
    let fadt = Array(table(tables, "FACP"))
    #expect(fadt.count == 276)
    #expect(UInt64(u32(fadt, 40)) == tables.addresses["DSDT"])
    #expect(u64(fadt, 140) == tables.addresses["DSDT"])
    #expect(UInt64(u32(fadt, 36)) == tables.addresses["FACS"])
    #expect(u32(fadt, 56) == UInt32(ACPIPowerManagement.base))
    #expect(u32(fadt, 64) == UInt32(ACPIPowerManagement.base + 4))
    #expect(fadt[46] == 9, "SCI on IRQ 9")
  }

  @Test("The MADT lists one enabled local APIC per vCPU, then the IOAPIC", arguments: [1, 3, 8])
  func madt(cpus: Int) {
    let madt = Array(table(ACPITables(cpuCount: cpus), "APIC"))
    #expect(u32(madt, 36) == 0xFEE0_0000)
    var offset = 44
    var apicIDs: [UInt8] = []
    var ioAPICs = 0
    while offset < madt.count {
      let type = madt[offset]
      let length = Int(madt[offset + 1])
      if type == 0 {
        apicIDs.append(madt[offset + 3])
        #expect(madt[offset + 4] & 1 == 1, "enabled")
      }
      if type == 1 {
        ioAPICs += 1
        #expect(u32(madt, offset + 4) == 0xFEC0_0000)
      }
      offset += length
    }
    #expect(offset == madt.count, "entries fill the table exactly")
    #expect(apicIDs == (0..<cpus).map { UInt8($0) })
    #expect(ioAPICs == 1)
  }

  @Test("The DSDT defines _S5_ with the soft-off type and a QEMU0001 pvpanic device")
  func dsdt() {
    let dsdt = Array(table(ACPITables(cpuCount: 1), "DSDT"))
    let body = Array(dsdt[36...])
    // Name(_S5_, Package(4) { 5, 5, 0, 0 })
    #expect(body.starts(with: [0x08] + Array("_S5_".utf8) + [0x12, 0x08, 0x04, 0x0A, 0x05, 0x0A, 0x05, 0x00, 0x00]))
    let text = String(decoding: body, as: UTF8.self)
    #expect(text.contains("QEMU0001"))
    #expect(text.contains("PEVT"))
  }

  @Test("AML package lengths use one byte below 64 and more above")
  func packageLength() {
    #expect(AML.packageLength(10) == [11])
    #expect(AML.packageLength(62) == [63])
    let two = AML.packageLength(100)
    #expect(two.count == 2 && two[0] >> 6 == 1)
    #expect(Int(two[0] & 0xF) | Int(two[1]) << 4 == 102)
    #expect(AML.integer(0x1234) == [0x0B, 0x34, 0x12])
  }
}
