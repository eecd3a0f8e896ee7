/// Builds one ACPI system description table: the standard 36-byte header, a body,
/// the length and checksum filled in at the end.
public struct ACPITable {
  public private(set) var bytes: [UInt8]

  /// Starts a table with `signature` (e.g. "APIC") and `revision`.
  public init(signature: String, revision: UInt8) {
    bytes = Array(signature.utf8.prefix(4))
    bytes += [0, 0, 0, 0]  // length
    bytes += [revision, 0]  // revision, checksum
    bytes += Array("SKVM  ".utf8)  // OEM id (6)
    bytes += Array("SWIFTKVM".utf8)  // OEM table id (8)
    append(UInt32(1))  // OEM revision
    bytes += Array("SKVM".utf8)  // creator id
    append(UInt32(1))  // creator revision
  }

  public mutating func append<T: FixedWidthInteger>(_ value: T) {
    withUnsafeBytes(of: value.littleEndian) { bytes += $0 }
  }

  public mutating func append(_ raw: [UInt8]) {
    bytes += raw
  }

  /// Writes `value` at `offset` (which must already exist).
  public mutating func set<T: FixedWidthInteger>(_ value: T, at offset: Int) {
    withUnsafeBytes(of: value.littleEndian) { bytes.replaceSubrange(offset..<offset + $0.count, with: $0) }
  }

  /// The finished table: length and checksum filled in.
  public func finished() -> [UInt8] {
    var table = self
    table.set(UInt32(bytes.count), at: 4)
    table.bytes[9] = 0
    table.bytes[9] = ACPITable.checksum(of: table.bytes)
    return table.bytes
  }

  /// The byte that makes `bytes` sum to zero.
  public static func checksum(of bytes: some Sequence<UInt8>) -> UInt8 {
    0 &- bytes.reduce(0, &+)
  }

  /// A Generic Address Structure for an I/O port register.
  public static func ioAddress(_ port: UInt16, bitWidth: UInt8, accessSize: UInt8) -> [UInt8] {
    var gas: [UInt8] = [1, bitWidth, 0, accessSize]  // system I/O space
    withUnsafeBytes(of: UInt64(port).littleEndian) { gas += $0 }
    return gas
  }
}
