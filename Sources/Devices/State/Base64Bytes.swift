/// Bytes that a saved state carries (configuration spaces, KVM structs) encoded as one base64
/// string rather than an array of numbers: a third of the size, and far quicker to parse.
/// Decoding is strict (no whitespace, correct padding): a state stream is untrusted.
public struct Base64Bytes: Codable, Sendable, Equatable {
  public var bytes: [UInt8]

  public init(_ bytes: [UInt8]) { self.bytes = bytes }

  public init(from decoder: any Decoder) throws {
    let text = try decoder.singleValueContainer().decode(String.self)
    guard let bytes = Self.decode(text) else {
      throw DecodingError.dataCorrupted(.init(codingPath: decoder.codingPath, debugDescription: "invalid base64"))
    }
    self.bytes = bytes
  }

  public func encode(to encoder: any Encoder) throws {
    var container = encoder.singleValueContainer()
    try container.encode(Self.encode(bytes))
  }

  private static let alphabet = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/".utf8)
  private static let values: [UInt8] = {
    var table = [UInt8](repeating: 0xFF, count: 256)
    for (index, character) in alphabet.enumerated() { table[Int(character)] = UInt8(index) }
    return table
  }()

  static func encode(_ bytes: [UInt8]) -> String {
    var output = [UInt8]()
    output.reserveCapacity((bytes.count + 2) / 3 * 4)
    var index = 0
    while index + 3 <= bytes.count {
      let value = UInt32(bytes[index]) << 16 | UInt32(bytes[index + 1]) << 8 | UInt32(bytes[index + 2])
      for shift in [18, 12, 6, 0] { output.append(alphabet[Int(value >> UInt32(shift) & 63)]) }
      index += 3
    }
    let rest = bytes.count - index
    if rest > 0 {
      let value = UInt32(bytes[index]) << 16 | (rest == 2 ? UInt32(bytes[index + 1]) << 8 : 0)
      output.append(alphabet[Int(value >> 18 & 63)])
      output.append(alphabet[Int(value >> 12 & 63)])
      output.append(rest == 2 ? alphabet[Int(value >> 6 & 63)] : UInt8(ascii: "="))
      output.append(UInt8(ascii: "="))
    }
    return String(decoding: output, as: UTF8.self)
  }

  static func decode(_ text: String) -> [UInt8]? {
    let input = Array(text.utf8)
    guard input.count % 4 == 0 else { return nil }
    var output = [UInt8]()
    output.reserveCapacity(input.count / 4 * 3)
    var index = 0
    while index < input.count {
      let last = index + 4 == input.count
      let padding =
        last ? (input[index + 3] == UInt8(ascii: "=") ? (input[index + 2] == UInt8(ascii: "=") ? 2 : 1) : 0) : 0
      var value: UInt32 = 0
      for offset in 0..<4 {
        let character = input[index + offset]
        if offset >= 4 - padding {
          value <<= 6
          continue
        }
        let digit = values[Int(character)]
        guard digit != 0xFF else { return nil }
        value = value << 6 | UInt32(digit)
      }
      output.append(UInt8(truncatingIfNeeded: value >> 16))
      if padding < 2 { output.append(UInt8(truncatingIfNeeded: value >> 8)) }
      if padding < 1 { output.append(UInt8(truncatingIfNeeded: value)) }
      index += 4
    }
    return output
  }
}
