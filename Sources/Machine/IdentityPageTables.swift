import GuestMemory

/// Four-level page tables that identity-map the low 4 GiB with 2 MiB pages.
///
/// Pages are present, writable and user-accessible, so a guest that drops to
/// ring 3 keeps the same view of memory. The tables occupy six pages at `base`.
public enum IdentityPageTables {
  /// How much guest memory the tables take.
  public static let size: UInt64 = 6 * 4096
  /// How much address space they map.
  public static let mappedSize: UInt64 = 4 << 30

  static let present: UInt64 = 1 << 0
  static let writable: UInt64 = 1 << 1
  static let user: UInt64 = 1 << 2
  static let largePage: UInt64 = 1 << 7

  /// Writes the tables at `base` and returns the value for CR3.
  public static func write(to memory: GuestMemory, at base: UInt64) throws(GuestMemoryError) -> UInt64 {
    let flags = present | writable | user
    let pml4 = base
    let pdpt = base + 0x1000
    let firstDirectory = base + 0x2000
    try memory.store(pdpt | flags, at: pml4)
    for gigabyte in 0..<UInt64(4) {
      let directory = firstDirectory + gigabyte * 0x1000
      try memory.store(directory | flags, at: pdpt + gigabyte * 8)
      for entry in 0..<UInt64(512) {
        let physical = (gigabyte << 30) | (entry << 21)
        try memory.store(physical | flags | largePage, at: directory + entry * 8)
      }
    }
    return pml4
  }
}
