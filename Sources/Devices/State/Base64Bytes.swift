/// Bytes that a saved state carries (configuration spaces, KVM structs) encoded as one base64
/// string rather than an array of numbers: a third of the size, and far quicker to parse.
/// Decoding is strict (no whitespace, correct padding): a state stream is untrusted.
public struct Base64Bytes: Codable, Sendable, Equatable {
  public var bytes: [UInt8]

  public init(_ bytes: [UInt8]) { self.bytes = bytes }

  /// `bytes` without their trailing zeros, for data whose reader knows its full size and pads
  /// it back (KVM structs and areas, mostly zeros: an XSAVE area's 4 KiB hold ~0.8 KiB of
  /// state unless AVX-512 or AMX is in use).
  public init(trimmingTrailingZeros bytes: [UInt8]) {
    var end = bytes.count
    while end > 0, bytes[end - 1] == 0 { end -= 1 }
    self.bytes = Array(bytes[..<end])
  }

  /// The bytes followed by zeros up to `size`; nil if more than `size` of them are not zero.
  public func padded(to size: Int) -> [UInt8]? {
    let state = Base64Bytes(trimmingTrailingZeros: bytes).bytes
    guard state.count <= size else { return nil }
    return state + [UInt8](repeating: 0, count: size - state.count)
  }

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

  private static let alphabet: StaticString = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
  /// Each byte's value as a base64 digit, 0xFF where it is none.
  private static let values: [UInt8] = {
    var table = [UInt8](repeating: 0xFF, count: 256)
    alphabet.withUTF8Buffer { for (index, character) in $0.enumerated() { table[Int(character)] = UInt8(index) } }
    return table
  }()

  /// Standard base64 with padding. One pass into the string's own storage: a state save
  /// encodes tens of kilobytes of configuration space while the guest is stopped.
  static func encode(_ bytes: [UInt8]) -> String {
    let length = (bytes.count + 2) / 3 * 4
    guard length > 0 else { return "" }
    return alphabet.withUTF8Buffer { digits in
      bytes.withUnsafeBufferPointer { input in
        String(unsafeUninitializedCapacity: length) { output in
          var read = 0
          var written = 0
          while read + 3 <= input.count {
            let value = UInt32(input[read]) << 16 | UInt32(input[read + 1]) << 8 | UInt32(input[read + 2])
            output[written] = digits[Int(value >> 18 & 63)]
            output[written + 1] = digits[Int(value >> 12 & 63)]
            output[written + 2] = digits[Int(value >> 6 & 63)]
            output[written + 3] = digits[Int(value & 63)]
            read += 3
            written += 4
          }
          let rest = input.count - read
          if rest > 0 {
            let value = UInt32(input[read]) << 16 | (rest == 2 ? UInt32(input[read + 1]) << 8 : 0)
            output[written] = digits[Int(value >> 18 & 63)]
            output[written + 1] = digits[Int(value >> 12 & 63)]
            output[written + 2] = rest == 2 ? digits[Int(value >> 6 & 63)] : UInt8(ascii: "=")
            output[written + 3] = UInt8(ascii: "=")
            written += 4
          }
          return written
        }
      }
    }
  }

  /// The bytes of strict standard base64 (length a multiple of 4, padding only at the end,
  /// no other characters); nil for anything else.
  static func decode(_ text: String) -> [UInt8]? {
    var text = text
    return text.withUTF8 { input -> [UInt8]? in
      guard input.count % 4 == 0 else { return nil }
      guard !input.isEmpty else { return [] }
      let padding =
        input[input.count - 1] == UInt8(ascii: "=") ? (input[input.count - 2] == UInt8(ascii: "=") ? 2 : 1) : 0
      let count = input.count / 4 * 3 - padding
      return values.withUnsafeBufferPointer { values -> [UInt8]? in
        var valid = true
        let output = [UInt8](unsafeUninitializedCapacity: count) { output, initialized in
          var read = 0
          var written = 0
          while read < input.count {
            let quantum = read + 4 == input.count ? 4 - padding : 4
            var value: UInt32 = 0
            for offset in 0..<4 {
              value <<= 6
              guard offset < quantum else { continue }
              let digit = values[Int(input[read + offset])]
              if digit == 0xFF { valid = false }
              value |= UInt32(digit & 63)
            }
            output[written] = UInt8(truncatingIfNeeded: value >> 16)
            if quantum > 2 { output[written + 1] = UInt8(truncatingIfNeeded: value >> 8) }
            if quantum > 3 { output[written + 2] = UInt8(truncatingIfNeeded: value) }
            written += quantum - 1
            read += 4
          }
          initialized = written
        }
        return valid ? output : nil
      }
    }
  }
}
