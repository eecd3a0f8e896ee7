/// A 48-bit Ethernet address, as `52:54:00:12:34:56`.
public struct MACAddress: Sendable, Hashable, Codable, CustomStringConvertible {
  /// The six bytes, most significant first (as on the wire).
  public let bytes: [UInt8]

  /// The address whose bytes are `bytes` (exactly six).
  public init?(bytes: [UInt8]) {
    guard bytes.count == 6 else { return nil }
    self.bytes = bytes
  }

  /// Parses six two-digit hexadecimal bytes separated by colons (or dashes).
  public init?(_ text: String) {
    let parts = text.split(separator: ":", omittingEmptySubsequences: false)
    let fields = parts.count == 6 ? parts : text.split(separator: "-", omittingEmptySubsequences: false)
    guard fields.count == 6 else { return nil }
    var bytes: [UInt8] = []
    for field in fields {
      guard field.count == 2, let byte = UInt8(field, radix: 16) else { return nil }
      bytes.append(byte)
    }
    self.bytes = bytes
  }

  /// A multicast (or broadcast) address: the low bit of the first byte.
  public var isMulticast: Bool { bytes[0] & 1 != 0 }
  /// ff:ff:ff:ff:ff:ff.
  public var isBroadcast: Bool { bytes.allSatisfy { $0 == 0xFF } }
  /// 00:00:00:00:00:00, which no NIC may use.
  public var isZero: Bool { bytes.allSatisfy { $0 == 0 } }
  /// Locally administered (not assigned by a vendor): the second-lowest bit of the first byte.
  public var isLocallyAdministered: Bool { bytes[0] & 2 != 0 }

  public var description: String {
    bytes.map { byte in
      let digits = String(byte, radix: 16)
      return digits.count == 1 ? "0" + digits : digits
    }.joined(separator: ":")
  }

  /// A locally administered unicast address in QEMU's 52:54:00 range, the same every time for
  /// the same VM name and NIC index (so a guest's DHCP lease and udev names survive restarts).
  public static func generated(name: String, index: Int) -> MACAddress {
    // FNV-1a over the name and index: stable across runs and hosts, spread over 24 bits.
    var hash: UInt64 = 0xcbf2_9ce4_8422_2325
    for byte in Array(name.utf8) + [0, UInt8(truncatingIfNeeded: index), UInt8(truncatingIfNeeded: index >> 8)] {
      hash = (hash ^ UInt64(byte)) &* 0x100_0000_01b3
    }
    return MACAddress(
      unchecked: [
        0x52, 0x54, 0x00, UInt8(truncatingIfNeeded: hash >> 16), UInt8(truncatingIfNeeded: hash >> 8),
        UInt8(truncatingIfNeeded: hash),
      ])
  }

  private init(unchecked bytes: [UInt8]) { self.bytes = bytes }

  // Codable as its text, as users write it.
  public init(from decoder: any Decoder) throws {
    let text = try decoder.singleValueContainer().decode(String.self)
    guard let address = MACAddress(text) else {
      throw DecodingError.dataCorrupted(
        .init(codingPath: decoder.codingPath, debugDescription: "not a MAC address: \(text)"))
    }
    self = address
  }

  public func encode(to encoder: any Encoder) throws {
    var container = encoder.singleValueContainer()
    try container.encode(description)
  }
}
