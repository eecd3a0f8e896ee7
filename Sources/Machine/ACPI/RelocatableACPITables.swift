/// SwiftKVM's ACPI tables before they have an address: the RSDP and a blob of every other
/// table whose pointers hold offsets into the blob, with the list of those pointers and of
/// the checksums to fill in once both are placed.
///
/// skvm places them itself for a direct boot (`ACPITables`); for a firmware boot it hands
/// them to the firmware as QEMU does — files `etc/acpi/rsdp` and `etc/acpi/tables` and a
/// linker/loader script — so the guest sees the same tables either way.
public struct RelocatableACPITables: Sendable {
  /// Which of the two blobs a field is in.
  public enum Blob: Sendable, Equatable {
    case rsdp
    case tables
  }

  /// A little-endian field of `size` bytes at `offset` in `blob`, holding an offset into the
  /// tables blob: its address is the blob's address added to it.
  public struct Pointer: Sendable, Equatable {
    public let blob: Blob
    public let offset: Int
    public let size: Int
  }

  /// The byte at `offset` in `blob` that makes `length` bytes from `start` sum to zero.
  public struct Checksum: Sendable, Equatable {
    public let blob: Blob
    public let offset: Int
    public let start: Int
    public let length: Int
  }

  /// The tables blob's alignment (the FACS inside it must be 64-byte aligned).
  public static let tablesAlignment = 64

  /// The RSDP (36 bytes, ACPI 2.0+), checksum fields zero.
  public let rsdp: [UInt8]
  /// DSDT, FACS, FADT, MADT, MCFG (with PCI) and XSDT, checksum fields zero.
  public let tables: [UInt8]
  /// Where each table starts in `tables`, by signature.
  public let offsets: [String: Int]
  public let pointers: [Pointer]
  /// In the order to apply them: each table's before the RSDP's.
  public let checksums: [Checksum]

  /// Tables for `cpuCount` CPUs; with `pci`, the DSDT describes a PCI root bridge.
  public init(cpuCount: Int, pci: Bool) {
    var blob: [UInt8] = []
    var offsets: [String: Int] = [:]
    var pointers: [Pointer] = []
    var checksums: [Checksum] = []
    func place(_ signature: String, _ table: [UInt8], alignment: Int = 16, checksummed: Bool = true) -> Int {
      blob += Array(repeating: 0, count: (alignment - blob.count % alignment) % alignment)
      let offset = blob.count
      blob += table
      offsets[signature] = offset
      if checksummed {
        blob[offset + 9] = 0
        checksums.append(Checksum(blob: .tables, offset: offset + 9, start: offset, length: table.count))
      }
      return offset
    }
    let dsdt = place("DSDT", ACPITables.dsdt(pci: pci))
    let facs = place("FACS", ACPITables.facs(), alignment: 64, checksummed: false)
    let fadt = place("FACP", ACPITables.fadt(facs: UInt64(facs), dsdt: UInt64(dsdt)))
    // FIRMWARE_CTRL, DSDT (32-bit), X_FIRMWARE_CTRL, X_DSDT (64-bit).
    for (field, size) in [(36, 4), (40, 4), (132, 8), (140, 8)] {
      pointers.append(Pointer(blob: .tables, offset: fadt + field, size: size))
    }
    var entries = [fadt, place("APIC", ACPITables.madt(cpuCount: cpuCount))]
    if pci { entries.append(place("MCFG", ACPITables.mcfg())) }
    let xsdt = place("XSDT", ACPITables.xsdt(entries: entries.map { UInt64($0) }))
    for index in entries.indices { pointers.append(Pointer(blob: .tables, offset: xsdt + 36 + 8 * index, size: 8)) }
    var rsdp = ACPITables.rsdp(xsdt: UInt64(xsdt))
    rsdp[8] = 0
    rsdp[32] = 0
    pointers.append(Pointer(blob: .rsdp, offset: 24, size: 8))
    // The first checksum covers the ACPI 1.0 part; the extended one all 36 bytes, after it.
    checksums += [
      Checksum(blob: .rsdp, offset: 8, start: 0, length: 20), Checksum(blob: .rsdp, offset: 32, start: 0, length: 36),
    ]
    self.rsdp = rsdp
    self.tables = blob
    self.offsets = offsets
    self.pointers = pointers
    self.checksums = checksums
  }

  /// Both blobs as they are with the tables blob at `tablesAddress` (nothing points at the
  /// RSDP, so its own address does not matter): pointers relocated, checksums set.
  public func placed(tablesAt tablesAddress: UInt64) -> (rsdp: [UInt8], tables: [UInt8]) {
    var blobs = (rsdp: rsdp, tables: tables)
    func edit(_ blob: Blob, _ body: (inout [UInt8]) -> Void) {
      switch blob {
      case .rsdp: body(&blobs.rsdp)
      case .tables: body(&blobs.tables)
      }
    }
    for pointer in pointers {
      edit(pointer.blob) { bytes in
        var value: UInt64 = 0
        for index in 0..<pointer.size { value |= UInt64(bytes[pointer.offset + index]) << (8 * index) }
        value &+= tablesAddress
        for index in 0..<pointer.size {
          bytes[pointer.offset + index] = UInt8(truncatingIfNeeded: value >> (8 * index))
        }
      }
    }
    for checksum in checksums {
      edit(checksum.blob) { bytes in
        bytes[checksum.offset] = 0
        bytes[checksum.offset] = ACPITable.checksum(of: bytes[checksum.start..<checksum.start + checksum.length])
      }
    }
    return blobs
  }
}
