/// Parses sizes as QEMU and qemu-img users write them: `256M`, `1G`, `512k`, `1.5G`, `4096B`.
///
/// Units are binary (K = 1024). A bare number means `defaultUnit` (MiB for
/// `--memory`, like QEMU's `-m`).
public enum ByteSize {
  /// Why a size could not be parsed.
  public struct ParseError: Error, Equatable, CustomStringConvertible {
    public let text: String
    public let reason: String
    public var description: String { "invalid size '\(text)': \(reason)" }
  }

  /// The shift of a unit letter (either case): B, K, M, G, T, P, E.
  static func unitShift(_ letter: UInt8) -> UInt64? {
    switch letter | 0x20 {
    case UInt8(ascii: "b"): 0
    case UInt8(ascii: "k"): 10
    case UInt8(ascii: "m"): 20
    case UInt8(ascii: "g"): 30
    case UInt8(ascii: "t"): 40
    case UInt8(ascii: "p"): 50
    case UInt8(ascii: "e"): 60
    default: nil
    }
  }

  /// Whether `byte`, the last of `bytes`, ends a letter (ASCII, or any script's).
  private static func isLetter(_ byte: UInt8, endOf bytes: [UInt8]) -> Bool {
    guard byte >= 0x80 else { return (UInt8(ascii: "a")...UInt8(ascii: "z")).contains(byte | 0x20) }
    return String(decoding: bytes, as: UTF8.self).last?.isLetter ?? false
  }

  /// Parses `text`; `defaultUnit` is the multiplier for a number without a suffix.
  public static func parse(_ text: String, defaultUnit: UInt64 = 1 << 20) throws(ParseError) -> UInt64 {
    var body = Array(text.trimmingSpaces.utf8)
    guard !body.isEmpty else { throw ParseError(text: text, reason: "it is empty") }
    if body.count > 2, body[body.count - 2] == UInt8(ascii: "i"), body.last! | 0x20 == UInt8(ascii: "b") {
      body.removeLast(2)
    }
    var multiplier = defaultUnit
    if let last = body.last, isLetter(last, endOf: body) {
      guard last < 0x80, let shift = unitShift(last) else {
        let unit = String(decoding: body, as: UTF8.self).last.map { String($0) } ?? ""
        throw ParseError(text: text, reason: "unknown unit '\(unit)'; use B, K, M, G, T, P or E")
      }
      multiplier = 1 << shift
      body.removeLast()
    }
    let parts = body.split(separator: UInt8(ascii: "."), omittingEmptySubsequences: false)
    let isDigit = { (byte: UInt8) in (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(byte) }
    guard (1...2).contains(parts.count), let wholeDigits = parts.first, !wholeDigits.isEmpty,
      wholeDigits.allSatisfy(isDigit), parts.count == 1 || parts[1].allSatisfy(isDigit)
    else { throw ParseError(text: text, reason: "expected a number with an optional unit, such as 256M or 1.5G") }
    var whole: UInt64 = 0
    for digit in wholeDigits {
      let (times10, overflow) = whole.multipliedReportingOverflow(by: 10)
      let (sum, carry) = times10.addingReportingOverflow(UInt64(digit - UInt8(ascii: "0")))
      guard !overflow, !carry else { throw ParseError(text: text, reason: "the number is too large") }
      whole = sum
    }
    let (product, overflow) = whole.multipliedReportingOverflow(by: multiplier)
    guard !overflow else { throw ParseError(text: text, reason: "it is larger than 16 EiB") }
    var result = product
    if parts.count == 2, !parts[1].isEmpty {
      var fraction = 0.0
      var scale = 0.1
      for digit in parts[1] {
        fraction += Double(digit - UInt8(ascii: "0")) * scale
        scale /= 10
      }
      let extra = (fraction * Double(multiplier)).rounded()
      guard extra < Double(UInt64.max - result) else {
        throw ParseError(text: text, reason: "it is larger than 16 EiB")
      }
      result += UInt64(extra)
    }
    return result
  }

  /// `268435456` → `256 MiB`, for messages.
  public static func describe(_ bytes: UInt64) -> String {
    for (unit, shift) in [("EiB", 60), ("PiB", 50), ("TiB", 40), ("GiB", 30), ("MiB", 20), ("KiB", 10)]
      as [(String, UInt64)]
    {
      if bytes >= 1 << shift && bytes % (1 << shift) == 0 { return "\(bytes >> shift) \(unit)" }
    }
    return "\(bytes) bytes"
  }
}

extension String {
  /// The string without leading and trailing spaces.
  var trimmingSpaces: String {
    let bytes = utf8
    guard let first = bytes.firstIndex(where: { $0 != UInt8(ascii: " ") }),
      let last = bytes.lastIndex(where: { $0 != UInt8(ascii: " ") })
    else { return "" }
    return String(self[first...last])
  }
}
