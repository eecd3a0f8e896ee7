/// Just enough ACPI Machine Language to describe SwiftKVM's fixed devices in a DSDT.
public enum AML {
  /// PkgLength: the length of what follows including the encoding itself.
  static func packageLength(_ contentLength: Int) -> [UInt8] {
    if contentLength + 1 < 0x40 { return [UInt8(contentLength + 1)] }
    for extra in 1...3 {
      let total = contentLength + 1 + extra
      if total < 1 << (4 + 8 * extra) {
        var encoded = [UInt8(extra << 6) | UInt8(total & 0xF)]
        for index in 0..<extra { encoded.append(UInt8((total >> (4 + 8 * index)) & 0xFF)) }
        return encoded
      }
    }
    return []  // unreachable for tables of sane size
  }

  /// A four-character name segment, padded with '_'.
  static func nameSegment(_ name: String) -> [UInt8] {
    let characters = Array(name.utf8.prefix(4))
    return characters + Array(repeating: UInt8(ascii: "_"), count: 4 - characters.count)
  }

  /// An integer constant in the smallest encoding.
  public static func integer(_ value: UInt64) -> [UInt8] {
    switch value {
    case 0: return [0x00]
    case 1: return [0x01]
    case ...0xFF: return [0x0A, UInt8(value)]
    case ...0xFFFF: return [0x0B] + littleEndian(UInt16(value))
    case ...0xFFFF_FFFF: return [0x0C] + littleEndian(UInt32(value))
    default: return [0x0E] + littleEndian(value)
    }
  }

  public static func string(_ text: String) -> [UInt8] { [0x0D] + Array(text.utf8) + [0] }

  /// `Name(NAME, object)`.
  public static func name(_ name: String, _ object: [UInt8]) -> [UInt8] { [0x08] + nameSegment(name) + object }

  /// `Package() { elements }` (at most 255 elements).
  public static func package(_ elements: [[UInt8]]) -> [UInt8] {
    let body = [UInt8(clamping: elements.count)] + elements.flatMap { $0 }
    return [0x12] + packageLength(body.count) + body
  }

  /// `Buffer() { bytes }`.
  public static func buffer(_ bytes: [UInt8]) -> [UInt8] {
    let body = integer(UInt64(bytes.count)) + bytes
    return [0x11] + packageLength(body.count) + body
  }

  /// `Scope(\PATH) { terms }` for a root-relative path of one segment, e.g. "_SB_".
  public static func scope(_ path: String, _ terms: [[UInt8]]) -> [UInt8] {
    let body = [0x5C] + nameSegment(path) + terms.flatMap { $0 }
    return [0x10] + packageLength(body.count) + body
  }

  /// `Device(NAME) { terms }`.
  public static func device(_ name: String, _ terms: [[UInt8]]) -> [UInt8] {
    let body = nameSegment(name) + terms.flatMap { $0 }
    return [0x5B, 0x82] + packageLength(body.count) + body
  }

  /// A resource template with one fixed I/O port range (16-bit decode).
  public static func ioResource(port: UInt16, length: UInt8) -> [UInt8] {
    let descriptor: [UInt8] =
      [0x47, 0x01] + littleEndian(port) + littleEndian(port) + [0x01, length]
    return buffer(descriptor + [0x79, 0x00])  // end tag; checksum 0 means "not computed"
  }

  /// A resource template with one fixed 32-bit memory range (read-write).
  public static func memoryResource(base: UInt32, length: UInt32) -> [UInt8] {
    buffer([0x86, 0x09, 0x00, 0x01] + littleEndian(base) + littleEndian(length) + [0x79, 0x00])
  }

  /// `EISAID("PNP0A03")`: three letters and four hex digits packed into a 32-bit integer.
  public static func eisaID(_ id: String) -> [UInt8] {
    let characters = Array(id.utf8)
    guard characters.count == 7 else { return integer(0) }
    func letter(_ c: UInt8) -> UInt32 { UInt32(c - 0x40) & 0x1F }
    func hex(_ c: UInt8) -> UInt32 { UInt32(Int(String(UnicodeScalar(c)), radix: 16) ?? 0) }
    let high = letter(characters[0]) << 10 | letter(characters[1]) << 5 | letter(characters[2])
    let product = hex(characters[3]) << 12 | hex(characters[4]) << 8 | hex(characters[5]) << 4 | hex(characters[6])
    // Stored big-endian within the 32-bit value, as ACPI's EISAID macro does.
    let value = (high >> 8 & 0xFF) | (high & 0xFF) << 8 | (product >> 8 & 0xFF) << 16 | (product & 0xFF) << 24
    return integer(UInt64(value))
  }

  /// The resources of a PCI root bridge: bus numbers, the I/O ports around 0xCF8–0xCFF,
  /// and one 32-bit memory window (ACPI 6 §6.4.3.5 address space descriptors).
  public static func pciRootResources(memoryWindow: ClosedRange<UInt32>) -> [UInt8] {
    func word(type: UInt8, flags: UInt8, minimum: UInt16, maximum: UInt16) -> [UInt8] {
      [0x88, 0x0D, 0x00, type, 0x0C, flags] + littleEndian(UInt16(0)) + littleEndian(minimum) + littleEndian(maximum)
        + littleEndian(UInt16(0)) + littleEndian(maximum - minimum + 1)
    }
    let busNumbers = word(type: 2, flags: 0, minimum: 0, maximum: 0)
    let lowPorts = word(type: 1, flags: 3, minimum: 0x0000, maximum: 0x0CF7)
    let highPorts = word(type: 1, flags: 3, minimum: 0x0D00, maximum: 0xFFFF)
    let configPorts: [UInt8] = [0x47, 0x01] + littleEndian(UInt16(0xCF8)) + littleEndian(UInt16(0xCF8)) + [0x01, 0x08]
    let memory: [UInt8] =
      [0x87, 0x17, 0x00, 0x00, 0x0C, 0x01] + littleEndian(UInt32(0)) + littleEndian(memoryWindow.lowerBound)
      + littleEndian(memoryWindow.upperBound) + littleEndian(UInt32(0))
      + littleEndian(memoryWindow.upperBound - memoryWindow.lowerBound + 1)
    return buffer(busNumbers + configPorts + lowPorts + highPorts + memory + [0x79, 0x00])
  }

  static func littleEndian<T: FixedWidthInteger>(_ value: T) -> [UInt8] {
    withUnsafeBytes(of: value.littleEndian) { Array($0) }
  }
}
