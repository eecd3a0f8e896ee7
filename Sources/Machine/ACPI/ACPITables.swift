import Devices

/// The ACPI tables SwiftKVM gives an x86 guest, laid out at one guest-physical base:
/// RSDP, XSDT, FADT (with FACS), MADT, DSDT and, with PCI, MCFG.
///
/// They describe N local APICs and one IOAPIC (so `--cpus N` works on kernels without
/// MP tables), the PM1a registers used for soft-off and the power button (SCI on IRQ 9),
/// the 0xCF9 reset register, the CMOS century register and a pvpanic device.
public struct ACPITables: Sendable {
  /// Where the tables start (inside the BIOS area, which the e820 map reserves).
  public static let defaultBase: UInt64 = 0xE_0000

  public let base: UInt64
  /// All tables, concatenated as they are laid out from `base`.
  public let bytes: [UInt8]
  /// Where each table landed, by signature.
  public let addresses: [String: UInt64]

  /// The RSDP's address (what `acpi_rsdp_addr` in the zero page points at).
  public var rsdpAddress: UInt64 { base }

  /// Tables for `cpuCount` CPUs; with `pci`, the DSDT describes a PCI root bridge.
  public init(cpuCount: Int, pci: Bool = false, base: UInt64 = defaultBase) {
    self.init(RelocatableACPITables(cpuCount: cpuCount, pci: pci), base: base)
  }

  /// `tables` laid out at `base`: the RSDP first, the rest from the next 64-byte boundary.
  public init(_ tables: RelocatableACPITables, base: UInt64 = defaultBase) {
    self.base = base
    let gap =
      (RelocatableACPITables.tablesAlignment - tables.rsdp.count % RelocatableACPITables.tablesAlignment)
      % RelocatableACPITables.tablesAlignment
    let tablesAddress = base + UInt64(tables.rsdp.count + gap)
    let placed = tables.placed(tablesAt: tablesAddress)
    bytes = placed.rsdp + Array(repeating: 0, count: gap) + placed.tables
    addresses = tables.offsets.mapValues { tablesAddress + UInt64($0) }.merging(["RSDP": base]) { first, _ in first }
  }

  static func rsdp(xsdt: UInt64) -> [UInt8] {
    var table = Array("RSD PTR ".utf8) + [0] + Array("SKVM  ".utf8) + [2]  // revision 2 (ACPI 2.0+)
    table += [0, 0, 0, 0]  // RSDT address: none, the XSDT is used
    table += AML.littleEndian(UInt32(36))
    table += AML.littleEndian(xsdt)
    table += [0, 0, 0, 0]  // extended checksum, reserved
    table[8] = ACPITable.checksum(of: table[0..<20])
    table[32] = ACPITable.checksum(of: table)
    return table
  }

  static func xsdt(entries: [UInt64]) -> [UInt8] {
    var table = ACPITable(signature: "XSDT", revision: 1)
    for entry in entries { table.append(entry) }
    return table.finished()
  }

  static func facs() -> [UInt8] {
    var table = Array("FACS".utf8) + AML.littleEndian(UInt32(64))
    table += Array(repeating: 0, count: 64 - table.count)
    table[32] = 2  // version
    return table
  }

  static func fadt(facs: UInt64, dsdt: UInt64) -> [UInt8] {
    var table = ACPITable(signature: "FACP", revision: 6)
    table.append(Array(repeating: 0, count: 276 - 36))
    table.set(UInt32(facs), at: 36)
    table.set(UInt32(dsdt), at: 40)
    table.set(UInt16(ACPIPowerManagement.sciInterrupt), at: 46)
    table.set(UInt32(ACPIPowerManagement.base), at: 56)  // PM1a_EVT_BLK
    table.set(UInt32((ACPIPowerManagement.base + 4)), at: 64)  // PM1a_CNT_BLK
    table.set(UInt8(4), at: 88)  // PM1_EVT_LEN
    table.set(UInt8(2), at: 89)  // PM1_CNT_LEN
    table.set(UInt16(0x65), at: 96)  // P_LVL2_LAT > 100: no C2
    table.set(UInt16(0x3E9), at: 98)  // P_LVL3_LAT > 1000: no C3
    table.set(UInt8(0x32), at: 108)  // CENTURY: CMOS register
    table.set(UInt16(1 << 2), at: 109)  // IAPC_BOOT_ARCH: no VGA; no 8042 to probe
    // Flags: WBINVD, PROC_C1, SLP_BUTTON (none; the power button is fixed hardware), RESET_REG_SUP.
    table.set(UInt32(1 << 0 | 1 << 2 | 1 << 5 | 1 << 10), at: 112)
    let reset = ACPITable.ioAddress(0xCF9, bitWidth: 8, accessSize: 1)
    for (index, byte) in reset.enumerated() { table.set(byte, at: 116 + index) }
    table.set(UInt8(0x06), at: 128)  // RESET_VALUE: reset CPU, full reset
    table.set(UInt64(facs), at: 132)  // X_FIRMWARE_CTRL
    table.set(UInt64(dsdt), at: 140)  // X_DSDT
    let event = ACPITable.ioAddress(UInt16(ACPIPowerManagement.base), bitWidth: 32, accessSize: 2)
    let control = ACPITable.ioAddress(UInt16((ACPIPowerManagement.base + 4)), bitWidth: 16, accessSize: 2)
    for (index, byte) in event.enumerated() { table.set(byte, at: 148 + index) }  // X_PM1a_EVT_BLK
    for (index, byte) in control.enumerated() { table.set(byte, at: 172 + index) }  // X_PM1a_CNT_BLK
    return table.finished()
  }

  static func madt(cpuCount: Int) -> [UInt8] {
    var table = ACPITable(signature: "APIC", revision: 4)
    table.append(UInt32(X86MemoryMap.localAPIC))
    table.append(UInt32(1))  // PCAT_COMPAT: the machine also has 8259 PICs
    for cpu in 0..<cpuCount {
      table.append([0, 8, UInt8(cpu), UInt8(cpu)])  // processor local APIC: UID, APIC id
      table.append(UInt32(1))  // enabled
    }
    table.append([1, 12, UInt8(cpuCount), 0])  // I/O APIC, its id after the CPUs'
    table.append(UInt32(X86MemoryMap.ioAPIC))
    table.append(UInt32(0))  // GSI base
    // The SCI: ISA IRQ 9 is level-triggered, active high.
    table.append([2, 10, 0, UInt8(ACPIPowerManagement.sciInterrupt)])
    table.append(UInt32(ACPIPowerManagement.sciInterrupt))
    table.append(UInt16(0x000D))
    table.append([4, 6, 0xFF, 0, 0, 1])  // local APIC NMI on LINT1, all processors
    return table.finished()
  }

  /// The PCI memory window the DSDT describes (BARs are placed inside it).
  public static let pciMemoryWindow: ClosedRange<UInt32> = 0xE000_0000...0xFEBF_FFFF

  static func dsdt(pci: Bool = false) -> [UInt8] {
    var table = ACPITable(signature: "DSDT", revision: 2)
    let sleepType = UInt64(ACPIPowerManagement.softOffSleepType)
    table.append(
      AML.name("_S5_", AML.package([AML.integer(sleepType), AML.integer(sleepType), AML.integer(0), AML.integer(0)])))
    table.append(
      AML.scope(
        "_SB_",
        [
          AML.device(
            "PEVT",
            [
              AML.name("_HID", AML.string("QEMU0001")),
              AML.name("_CRS", AML.ioResource(port: UInt16(PanicNotifier.port), length: 1)),
            ])
        ] + (pci ? [Self.pciRoot()] : [])))
    return table.finished()
  }

  /// The IOAPIC pin (GSI) that INTx pin `pin` (0 = INTA) of the device in `slot` drives:
  /// the usual swizzle over GSIs 16–23, which the DSDT's `_PRT` tells the guest.
  public static func pciInterruptGSI(slot: Int, pin: Int) -> UInt32 { UInt32(16 + (slot + pin) % 8) }

  /// PCI0: the PCI Express root bridge (bus 0), its I/O ports and memory window and its
  /// interrupt routing (`_PRT`, for drivers without MSI-X); and a motherboard device that
  /// reserves the ECAM range, which Linux requires before it uses MCFG.
  static func pciRoot() -> [UInt8] {
    let routes = (1..<32).flatMap { slot in
      (0..<4).map { pin in
        AML.package([
          AML.integer(UInt64(slot) << 16 | 0xFFFF), AML.integer(UInt64(pin)), AML.integer(0),
          AML.integer(UInt64(pciInterruptGSI(slot: slot, pin: pin))),
        ])
      }
    }
    return AML.device(
      "PCI0",
      [
        AML.name("_HID", AML.eisaID("PNP0A08")), AML.name("_CID", AML.eisaID("PNP0A03")),
        AML.name("_UID", AML.integer(0)), AML.name("_SEG", AML.integer(0)), AML.name("_BBN", AML.integer(0)),
        AML.name("_CRS", AML.pciRootResources(memoryWindow: pciMemoryWindow)),
        AML.name("_PRT", AML.package(routes)),
      ])
      + AML.device(
        "MRES",
        [
          AML.name("_HID", AML.eisaID("PNP0C02")), AML.name("_UID", AML.integer(1)),
          AML.name(
            "_CRS",
            AML.memoryResource(
              base: UInt32(X86MemoryMap.pciExpressECAM), length: UInt32(PCIExpressECAM.size))),
        ])
  }

  /// MCFG: where ECAM configuration space for bus 0 of segment 0 lives.
  static func mcfg() -> [UInt8] {
    var table = ACPITable(signature: "MCFG", revision: 1)
    table.append(UInt64(0))  // reserved
    table.append(UInt64(X86MemoryMap.pciExpressECAM))
    table.append(UInt16(0))  // segment
    table.append([0, 0])  // buses 0–0
    table.append(UInt32(0))
    return table.finished()
  }
}
