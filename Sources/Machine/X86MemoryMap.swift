/// Where things live in an x86 guest's physical address space.
public enum X86MemoryMap {
  /// RAM above this address (up to 4 GiB) is left as a hole for MMIO: PCI windows, IOAPIC, LAPIC, firmware.
  public static let mmioHoleStart: UInt64 = 0xC000_0000
  /// RAM resumes here when the guest has more than fits below the hole.
  public static let highMemoryStart: UInt64 = 0x1_0000_0000

  /// PCI Express ECAM (MMCONFIG) for bus 0: 1 MiB at the start of the MMIO hole, below the
  /// PCI memory window; MCFG points here and the e820 map reserves it.
  public static let pciExpressECAM: UInt64 = 0xC000_0000

  /// The local APIC's default MMIO page.
  public static let localAPIC: UInt64 = 0xFEE0_0000
  /// The IOAPIC's default MMIO page.
  public static let ioAPIC: UInt64 = 0xFEC0_0000

  /// Three pages for KVM's TSS on Intel hosts, just below the BIOS area (as QEMU places it).
  public static let kvmTSS: UInt64 = 0xFFFB_D000
  /// One page for KVM's real-mode identity map on Intel hosts.
  public static let kvmIdentityMap: UInt64 = 0xFFFB_C000

  /// The GDT used when SwiftKVM starts a vCPU in protected or long mode.
  public static let bootGDT: UInt64 = 0x500
  /// The identity-mapping page tables (PML4, PDPT, 4 page directories).
  public static let bootPageTables: UInt64 = 0x1000
  /// Where flat binaries are loaded (kvmtool's convention).
  public static let flatLoadAddress: UInt64 = 0x1_0000

  /// RAM ranges for `size` bytes of guest memory: below the MMIO hole first, the rest above 4 GiB.
  public static func ramRanges(size: UInt64) -> [(guestAddress: UInt64, size: UInt64)] {
    if size <= mmioHoleStart { return [(0, size)] }
    return [(0, mmioHoleStart), (highMemoryStart, size - mmioHoleStart)]
  }
}
