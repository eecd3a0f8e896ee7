/// An x86-64 ELF kernel (`vmlinux`): its loadable segments and entry points.
///
/// A Linux vmlinux built with CONFIG_PVH carries a Xen note (`XEN_ELFNOTE_PHYS32_ENTRY`)
/// giving a 32-bit entry that takes an `hvm_start_info`; without it, the ELF entry is
/// `startup_64`, which takes a zero page like the 64-bit boot protocol.
public struct ELFKernel: Sendable {
  /// One PT_LOAD segment, placed at its physical address.
  public struct Segment: Sendable, Equatable {
    public let physicalAddress: UInt64
    public let fileRange: Range<Int>
    public let memorySize: UInt64
  }

  public let bytes: [UInt8]
  public let segments: [Segment]
  /// The ELF entry (`startup_64`), as a physical address.
  public let entry: UInt64
  /// The PVH 32-bit entry, when the kernel has one.
  public let pvhEntry: UInt32?

  /// One past the highest physical byte any segment occupies.
  public var end: UInt64 { segments.map { $0.physicalAddress + $0.memorySize }.max() ?? 0 }

  static let pvhEntryNote: UInt32 = 18  // XEN_ELFNOTE_PHYS32_ENTRY

  public static func isELF(_ bytes: [UInt8]) -> Bool { bytes.starts(with: [0x7F, 0x45, 0x4C, 0x46]) }

  public init(_ bytes: [UInt8], name: String) throws(LinuxBootError) {
    func u16(_ offset: Int) -> UInt16 { UInt16(bytes[offset]) | UInt16(bytes[offset + 1]) << 8 }
    func u32(_ offset: Int) -> UInt32 { UInt32(u16(offset)) | UInt32(u16(offset + 2)) << 16 }
    func u64(_ offset: Int) -> UInt64 { UInt64(u32(offset)) | UInt64(u32(offset + 4)) << 32 }
    guard bytes.count >= 64, Self.isELF(bytes) else { throw .notABzImage(name, "not an ELF file") }
    guard bytes[4] == 2, bytes[5] == 1 else { throw .unsupported(name, "it is not a 64-bit little-endian ELF file") }
    guard u16(18) == 62 else { throw .unsupported(name, "it is an ELF file for machine \(u16(18)), not x86-64") }
    let headerOffset = u64(32)
    let headerSize = Int(u16(54))
    let headerCount = Int(u16(56))
    guard headerSize >= 56, headerOffset < UInt64(bytes.count),
      Int(headerOffset) + headerSize * headerCount <= bytes.count
    else { throw .notABzImage(name, "its program headers lie outside the file") }
    var segments: [Segment] = []
    var pvhEntry: UInt32?
    for index in 0..<headerCount {
      let header = Int(headerOffset) + index * headerSize
      let type = u32(header)
      let offset = u64(header + 8)
      let physical = u64(header + 24)
      let fileSize = u64(header + 32)
      let memorySize = u64(header + 40)
      guard offset <= UInt64(bytes.count), fileSize <= UInt64(bytes.count) - offset else {
        throw .notABzImage(name, "it is truncated: segment \(index) ends past the end of the file")
      }
      if type == 1 {  // PT_LOAD
        guard fileSize <= memorySize, physical <= UInt64.max - memorySize else {
          throw .notABzImage(name, "segment \(index) has inconsistent sizes")
        }
        segments.append(
          Segment(physicalAddress: physical, fileRange: Int(offset)..<Int(offset + fileSize), memorySize: memorySize))
      } else if type == 4 {  // PT_NOTE
        pvhEntry = pvhEntry ?? Self.findPVHEntry(bytes, notes: Int(offset)..<Int(offset + fileSize))
      }
    }
    guard !segments.isEmpty else { throw .notABzImage(name, "it has no loadable segments") }
    self.bytes = bytes
    self.segments = segments
    // vmlinux's entry is a virtual address in the kernel map; its physical twin is what we jump to.
    let entry = u64(24)
    self.entry = entry >= 0xFFFF_FFFF_8000_0000 ? entry - 0xFFFF_FFFF_8000_0000 : entry
    self.pvhEntry = pvhEntry
  }

  /// Walks ELF notes for the Xen PVH entry.
  private static func findPVHEntry(_ bytes: [UInt8], notes: Range<Int>) -> UInt32? {
    func u32(_ offset: Int) -> UInt32 {
      (0..<4).reduce(0) { $0 | UInt32(bytes[offset + $1]) << (8 * $1) }
    }
    var cursor = notes.lowerBound
    while cursor + 12 <= notes.upperBound {
      let nameSize = Int(u32(cursor))
      let descriptionSize = Int(u32(cursor + 4))
      let type = u32(cursor + 8)
      let name = cursor + 12
      let description = name + (nameSize + 3) & ~3
      let next = description + (descriptionSize + 3) & ~3
      guard nameSize < 1 << 16, descriptionSize < 1 << 16, next <= notes.upperBound, next > cursor else { return nil }
      if type == pvhEntryNote, nameSize >= 3, bytes[name..<name + 3].elementsEqual(Array("Xen".utf8)),
        descriptionSize >= 4
      {
        return u32(description)
      }
      cursor = next
    }
    return nil
  }
}
