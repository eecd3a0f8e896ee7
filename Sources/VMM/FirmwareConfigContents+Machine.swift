import Devices
import Machine

extension FirmwareConfigContents {
  /// What QEMU's PC machine hands its firmware through fw_cfg, for a machine of `cpuCount`
  /// vCPUs with RAM at `ranges`: RAM size and CPU counts under their legacy keys, the RAM
  /// map as `etc/e820` (20-byte entries: address, length, type, little-endian: the RAM, and
  /// PCI Express configuration space reserved, as the MCFG table requires), the ACPI
  /// tables with the script that installs them, and COM1 as the firmware's screen (the
  /// machine has no display: SeaBIOS mirrors its text screen there).
  static func machine(
    cpuCount: Int, ranges: [(guestAddress: UInt64, size: UInt64)], acpi: RelocatableACPITables,
    boot: FirmwareBootOptions? = nil, diskCount: Int = 0, hasCDROM: Bool = false
  ) -> FirmwareConfigContents {
    var contents = FirmwareConfigContents()
    let total = ranges.reduce(0) { $0 + $1.size }
    // Legacy keys and one fixed, short file name: none of these can be refused.
    try? contents.set(Key.ramSize, littleEndian(total))
    try? contents.set(Key.cpuCount, littleEndian(UInt16(clamping: cpuCount)))
    try? contents.set(Key.maximumCPUs, littleEndian(UInt16(clamping: cpuCount)))
    var e820: [UInt8] = []
    for range in ranges {
      e820 +=
        littleEndian(range.guestAddress) + littleEndian(range.size)
        + littleEndian(E820Map.Entry.Kind.ram.rawValue)
    }
    e820 +=
      littleEndian(X86MemoryMap.pciExpressECAM) + littleEndian(PCIExpressECAM.size)
      + littleEndian(E820Map.Entry.Kind.reserved.rawValue)
    try? contents.addFile("etc/e820", e820)
    try? contents.set(Key.noGraphic, littleEndian(UInt16(1)))
    try? contents.addFile("etc/sercon-port", littleEndian(UInt16(SerialPort.com1Base)))
    contents.addACPI(acpi)
    contents.addBootOptions(boot, diskCount: diskCount, hasCDROM: hasCDROM)
    return contents
  }

  /// The boot order, menu and retry time of `options` as SeaBIOS reads them: `bootorder` (one
  /// OpenFirmware device path per line, as QEMU writes them), the boot menu flag and
  /// `etc/boot-fail-wait` (milliseconds; all ones waits forever). Without options the firmware
  /// keeps its own order and shows no menu.
  mutating func addBootOptions(_ options: FirmwareBootOptions?, diskCount: Int, hasCDROM: Bool) {
    let options = options ?? FirmwareBootOptions()
    var paths: [String] = []
    for device in options.order {
      switch device {
      case .disk where diskCount > 0: paths.append("/pci@i0cf8/*@\(String(PCIDevices.diskSlot(0), radix: 16))")
      case .cdrom where hasCDROM:
        // The drive is target 0, LUN 0 of the virtio-scsi function.
        paths.append("/pci@i0cf8/*@\(String(PCIDevices.cdromSlot(diskCount: diskCount), radix: 16))/*@0/*@0,0")
      case .disk, .cdrom, .network: break  // checked before the machine is built
      }
    }
    if !paths.isEmpty { try? addFile("bootorder", Array((paths.joined(separator: "\n") + "\n").utf8)) }
    try? set(Key.bootMenu, Self.littleEndian(UInt16(options.menu ? 1 : 0)))
    try? addFile("etc/boot-fail-wait", Self.littleEndian(options.rebootTimeout ?? UInt32.max))
  }

  /// The ACPI tables as QEMU hands them over: `etc/acpi/tables` anywhere in memory,
  /// `etc/acpi/rsdp` in the F segment, and `etc/table-loader` to link them.
  mutating func addACPI(_ acpi: RelocatableACPITables) {
    let files = (rsdp: "etc/acpi/rsdp", tables: "etc/acpi/tables")
    func name(_ blob: RelocatableACPITables.Blob) -> String { blob == .rsdp ? files.rsdp : files.tables }
    var loader = FirmwareTableLoader()
    loader.allocate(files.tables, alignment: UInt32(RelocatableACPITables.tablesAlignment), zone: .high)
    loader.allocate(files.rsdp, alignment: 16, zone: .fSegment)
    for pointer in acpi.pointers {
      loader.addPointer(in: name(pointer.blob), at: UInt32(pointer.offset), size: UInt8(pointer.size), to: files.tables)
    }
    for checksum in acpi.checksums {
      loader.addChecksum(
        in: name(checksum.blob), at: UInt32(checksum.offset), start: UInt32(checksum.start),
        length: UInt32(checksum.length))
    }
    // Fixed, short, new names: none of these can be refused.
    try? addFile(files.tables, acpi.tables)
    try? addFile(files.rsdp, acpi.rsdp)
    try? addFile("etc/table-loader", loader.bytes)
  }
}
