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

  static let unitShifts: [Character: UInt64] = ["B": 0, "K": 10, "M": 20, "G": 30, "T": 40, "P": 50, "E": 60]

  /// Parses `text`; `defaultUnit` is the multiplier for a number without a suffix.
  public static func parse(_ text: String, defaultUnit: UInt64 = 1 << 20) throws(ParseError) -> UInt64 {
    var body = Substring(text.trimmingSpaces)
    guard !body.isEmpty else { throw ParseError(text: text, reason: "it is empty") }
    for suffix in ["iB", "ib"] where body.hasSuffix(suffix) && body.count > 2 { body = body.dropLast(2) }
    var multiplier = defaultUnit
    if let last = body.last, last.isLetter {
      guard let shift = unitShifts[Character(last.uppercased())] else {
        throw ParseError(text: text, reason: "unknown unit '\(last)'; use B, K, M, G, T, P or E")
      }
      multiplier = 1 << shift
      body = body.dropLast()
    }
    let parts = body.split(separator: ".", omittingEmptySubsequences: false)
    guard (1...2).contains(parts.count), let wholeText = parts.first, !wholeText.isEmpty,
      wholeText.allSatisfy(\.isASCIIDigit), parts.count == 1 || parts[1].allSatisfy(\.isASCIIDigit)
    else { throw ParseError(text: text, reason: "expected a number with an optional unit, such as 256M or 1.5G") }
    guard let whole = UInt64(wholeText) else { throw ParseError(text: text, reason: "the number is too large") }
    let (product, overflow) = whole.multipliedReportingOverflow(by: multiplier)
    guard !overflow else { throw ParseError(text: text, reason: "it is larger than 16 EiB") }
    var result = product
    if parts.count == 2, !parts[1].isEmpty {
      var fraction = 0.0
      var scale = 0.1
      for digit in parts[1] {
        fraction += Double(digit.wholeNumberValue ?? 0) * scale
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

extension Character {
  var isASCIIDigit: Bool { ("0"..."9").contains(self) }
}

extension String {
  var trimmingSpaces: String {
    String(drop { $0 == " " }.reversed().drop { $0 == " " }.reversed())
  }
}
