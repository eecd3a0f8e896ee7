/// The BIOS e820 memory map a Linux guest reads from its zero page.
public struct E820Map: Sendable, Equatable {
  /// One range of the map.
  public struct Entry: Sendable, Equatable {
    public enum Kind: UInt32, Sendable {
      case ram = 1
      case reserved = 2
      case acpiReclaimable = 3
    }

    public var address: UInt64
    public var size: UInt64
    public var kind: Kind
  }

  public var entries: [Entry]

  /// The usual PC layout for RAM `ranges`: conventional memory up to the EBDA at
  /// 0x9FC00, the VGA/BIOS hole, RAM from 1 MiB, the BIOS area (with the ACPI tables)
  /// reserved at 0xE0000–0xFFFFF, and RAM above 4 GiB when there is any.
  public static func standard(ramRanges: [(guestAddress: UInt64, size: UInt64)]) -> E820Map {
    var entries: [Entry] = [
      Entry(address: 0, size: 0x9_FC00, kind: .ram),
      Entry(address: 0x9_FC00, size: 0x400, kind: .reserved),
      Entry(address: 0xE_0000, size: 0x2_0000, kind: .reserved),
    ]
    for range in ramRanges {
      let start = max(range.guestAddress, 0x10_0000)
      let end = range.guestAddress + range.size
      if end > start { entries.append(Entry(address: start, size: end - start, kind: .ram)) }
    }
    return E820Map(entries: entries)
  }

  /// The map with `size` bytes at `address` also reserved (device ranges such as ECAM), kept in address order.
  public func reserving(_ address: UInt64, size: UInt64) -> E820Map {
    var entries = entries + [Entry(address: address, size: size, kind: .reserved)]
    entries.sort { $0.address < $1.address }
    return E820Map(entries: entries)
  }
}
