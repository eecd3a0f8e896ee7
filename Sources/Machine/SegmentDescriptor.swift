import KVM

/// Builds x86 segment registers and the GDT entries that match them.
public enum SegmentDescriptor {
  /// A flat 64-bit code segment.
  public static func code64(selector: UInt16, dpl: UInt8 = 0) -> Segment {
    flat(selector: selector, type: 0xB, dpl: dpl, longMode: true, defaultSize: false)
  }

  /// A flat 32-bit code segment.
  public static func code32(selector: UInt16, dpl: UInt8 = 0) -> Segment {
    flat(selector: selector, type: 0xB, dpl: dpl, longMode: false, defaultSize: true)
  }

  /// A flat read/write data segment.
  public static func data(selector: UInt16, dpl: UInt8 = 0) -> Segment {
    flat(selector: selector, type: 0x3, dpl: dpl, longMode: false, defaultSize: true)
  }

  /// A 64 KiB real-mode segment with base `selector << 4`.
  public static func realMode(selector: UInt16, code: Bool) -> Segment {
    var segment = Segment()
    segment.base = UInt64(selector) << 4
    segment.limit = 0xFFFF
    segment.selector = selector
    segment.type = code ? 0xB : 0x3
    segment.present = 1
    segment.s = 1
    return segment
  }

  private static func flat(selector: UInt16, type: UInt8, dpl: UInt8, longMode: Bool, defaultSize: Bool) -> Segment {
    var segment = Segment()
    segment.base = 0
    segment.limit = 0xFFFF_FFFF
    segment.selector = selector
    segment.type = type
    segment.present = 1
    segment.dpl = dpl
    segment.db = defaultSize ? 1 : 0
    segment.s = 1
    segment.l = longMode ? 1 : 0
    segment.g = 1
    return segment
  }

  /// The 8-byte GDT entry describing `segment`.
  public static func gdtEntry(_ segment: Segment) -> UInt64 {
    let limit = segment.g != 0 ? segment.limit >> 12 : segment.limit
    let base = UInt64(truncatingIfNeeded: segment.base) & 0xFFFF_FFFF
    var entry = UInt64(limit & 0xFFFF)
    entry |= (base & 0xFF_FFFF) << 16
    entry |= UInt64(segment.type & 0xF) << 40
    entry |= UInt64(segment.s & 1) << 44
    entry |= UInt64(segment.dpl & 3) << 45
    entry |= UInt64(segment.present & 1) << 47
    entry |= UInt64((limit >> 16) & 0xF) << 48
    entry |= UInt64(segment.avl & 1) << 52
    entry |= UInt64(segment.l & 1) << 53
    entry |= UInt64(segment.db & 1) << 54
    entry |= UInt64(segment.g & 1) << 55
    entry |= (base >> 24 & 0xFF) << 56
    return entry
  }
}
