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

  /// `Package() { elements }`.
  public static func package(_ elements: [[UInt8]]) -> [UInt8] {
    let body = [UInt8(elements.count)] + elements.flatMap { $0 }
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

  static func littleEndian<T: FixedWidthInteger>(_ value: T) -> [UInt8] {
    withUnsafeBytes(of: value.littleEndian) { Array($0) }
  }
}
