/// A PCI function's configuration space as a plain value (so snapshots can save it): the
/// bytes, which bits the driver may write, and the BARs whose sizes the masks encode.
///
/// Writes go through the masks, so BAR sizing works as on hardware: writing all ones to a
/// BAR reads back the size mask and type bits.
public struct PCIConfigSpace: Sendable, Equatable, Codable {
  /// A base address register.
  public struct BAR: Sendable, Equatable, Codable {
    public enum Kind: Sendable, Equatable, Codable {
      case io
      case memory32
      case memory64
    }
    public var kind: Kind
    /// A power of two (at least 16 for memory, 4 for I/O).
    public var size: UInt64
    public var prefetchable: Bool

    public init(kind: Kind, size: UInt64, prefetchable: Bool = false) {
      self.kind = kind
      self.size = size
      self.prefetchable = prefetchable
    }
  }

  public static let headerSize = 64
  public private(set) var bytes: [UInt8]
  private var writeMask: [UInt8]
  /// Where each BAR lives (index 0–5), for address decoding.
  public private(set) var bars: [Int: BAR] = [:]

  /// Register offsets of the type-0 header.
  public enum Register {
    public static let vendorID = 0x00
    public static let deviceID = 0x02
    public static let command = 0x04
    public static let status = 0x06
    public static let revision = 0x08
    public static let classCode = 0x09
    public static let headerType = 0x0E
    public static let bar0 = 0x10
    public static let subsystemVendorID = 0x2C
    public static let subsystemID = 0x2E
    public static let capabilities = 0x34
    public static let interruptLine = 0x3C
    public static let interruptPin = 0x3D
  }

  /// A type-0 header with the given identity; `size` 256 (PCI) or 4096 (PCI Express).
  public init(
    vendor: UInt16, device: UInt16, classCode: UInt32, revision: UInt8 = 0, subsystemVendor: UInt16 = 0,
    subsystem: UInt16 = 0, interruptPin: UInt8 = 0, size: Int = 4096
  ) {
    bytes = [UInt8](repeating: 0, count: size)
    writeMask = [UInt8](repeating: 0, count: size)
    set16(vendor, at: Register.vendorID)
    set16(device, at: Register.deviceID)
    bytes[Register.revision] = revision
    bytes[Register.classCode] = UInt8(truncatingIfNeeded: classCode)
    bytes[Register.classCode + 1] = UInt8(truncatingIfNeeded: classCode >> 8)
    bytes[Register.classCode + 2] = UInt8(truncatingIfNeeded: classCode >> 16)
    set16(subsystemVendor, at: Register.subsystemVendorID)
    set16(subsystem, at: Register.subsystemID)
    bytes[Register.interruptPin] = interruptPin
    // Command: I/O, memory, bus master, INTx disable are the driver's.
    writeMask[Register.command] = 0x07
    writeMask[Register.command + 1] = 0x04
    writeMask[Register.interruptLine] = 0xFF
    // Device-specific space past the header is the device's to expose.
  }

  /// Declares BAR `index` (a 64-bit BAR also takes `index + 1`).
  public mutating func setBAR(_ index: Int, _ bar: BAR) {
    guard (0..<6).contains(index), bar.size.nonzeroBitCount == 1 else { return }
    let offset = Register.bar0 + 4 * index
    let flags: UInt64
    switch bar.kind {
    case .io: flags = 0x1
    case .memory32: flags = bar.prefetchable ? 0x8 : 0
    case .memory64: flags = 0x4 | (bar.prefetchable ? 0x8 : 0)
    }
    let mask = ~(bar.size - 1)
    let width = bar.kind == .memory64 ? 8 : 4
    for byte in 0..<width {
      bytes[offset + byte] = UInt8(truncatingIfNeeded: flags >> (8 * UInt64(byte)))
      // Type bits are read-only; address bits above the size are writable.
      let lowFlagMask: UInt64 = bar.kind == .io ? 0x3 : 0xF
      writeMask[offset + byte] = UInt8(truncatingIfNeeded: (mask & ~lowFlagMask) >> (8 * UInt64(byte)))
    }
    bars[index] = bar
  }

  /// The guest-programmed base of BAR `index` (flag bits cleared), or nil if there is none.
  public func barAddress(_ index: Int) -> UInt64? {
    guard let bar = bars[index] else { return nil }
    let offset = Register.bar0 + 4 * index
    var value = UInt64(read(offset, width: 4))
    if bar.kind == .memory64 { value |= UInt64(read(offset + 4, width: 4)) << 32 }
    return value & (bar.kind == .io ? ~0x3 : ~0xF)
  }

  /// Whether the driver enabled memory (or I/O) decoding for this function.
  public var memoryEnabled: Bool { bytes[Register.command] & 0x2 != 0 }
  public var ioEnabled: Bool { bytes[Register.command] & 0x1 != 0 }

  /// Reads 1, 2 or 4 bytes at `offset`; outside the space, all ones.
  public func read(_ offset: Int, width: Int) -> UInt32 {
    guard offset >= 0, offset + width <= bytes.count else { return UInt32.max >> (32 - 8 * UInt32(min(width, 4))) }
    var value: UInt32 = 0
    for byte in 0..<width { value |= UInt32(bytes[offset + byte]) << (8 * UInt32(byte)) }
    return value
  }

  /// Writes through the mask: only bits the driver owns change.
  public mutating func write(_ offset: Int, width: Int, value: UInt32) {
    guard offset >= 0, offset + width <= bytes.count else { return }
    for byte in 0..<width {
      let incoming = UInt8(truncatingIfNeeded: value >> (8 * UInt32(byte)))
      let mask = writeMask[offset + byte]
      bytes[offset + byte] = (bytes[offset + byte] & ~mask) | (incoming & mask)
    }
  }

  /// Sets bytes the device owns (capabilities, device-specific registers), with their write mask.
  public mutating func setDeviceBytes(_ values: [UInt8], at offset: Int, writable: [UInt8]? = nil) {
    guard offset >= Self.headerSize, offset + values.count <= bytes.count else { return }
    bytes.replaceSubrange(offset..<offset + values.count, with: values)
    if let writable { writeMask.replaceSubrange(offset..<offset + writable.count, with: writable) }
  }

  /// Sets the status bit saying a capability list follows, and points at the first capability.
  public mutating func setCapabilityList(at offset: UInt8) {
    bytes[Register.capabilities] = offset
    bytes[Register.status] |= 0x10
  }

  private mutating func set16(_ value: UInt16, at offset: Int) {
    bytes[offset] = UInt8(truncatingIfNeeded: value)
    bytes[offset + 1] = UInt8(truncatingIfNeeded: value >> 8)
  }

  /// Checks that `self`, decoded from an untrusted snapshot, has the size, write masks and BAR
  /// layout of `reference` (what this machine's device has), and the same value in every bit
  /// the guest cannot write: only what the guest programs may differ.
  public func checkShape(like reference: PCIConfigSpace) throws(DeviceStateError) {
    guard bytes.count == reference.bytes.count, writeMask == reference.writeMask, bars == reference.bars,
      zip(zip(bytes, reference.bytes), writeMask).allSatisfy({ pair, mask in (pair.0 ^ pair.1) & ~mask == 0 })
    else {
      throw DeviceStateError("the configuration space does not have this device's layout")
    }
  }

  private enum CodingKeys: String, CodingKey {
    case size, bytes, writeMask, bars
  }

  /// The saved form holds the space's size and its bytes and write mask without their trailing
  /// zeros: a PCI Express space is 4 KiB of which a device uses a few hundred bytes, and the
  /// state is encoded while the guest is stopped (a migration's switch-over). A state without
  /// `size` (saved before it existed) holds both arrays whole.
  public init(from decoder: any Decoder) throws {
    let container = try decoder.container(keyedBy: CodingKeys.self)
    bytes = try container.decode(Base64Bytes.self, forKey: .bytes).bytes
    writeMask = try container.decode(Base64Bytes.self, forKey: .writeMask).bytes
    bars = try container.decode([Int: BAR].self, forKey: .bars)
    let size = try container.decodeIfPresent(Int.self, forKey: .size) ?? bytes.count
    guard size == 256 || size == 4096, bytes.count <= size, writeMask.count <= size,
      container.contains(.size) || bytes.count == writeMask.count
    else {
      throw DecodingError.dataCorrupted(
        .init(
          codingPath: decoder.codingPath,
          debugDescription:
            "a configuration space of \(size) bytes with \(bytes.count) bytes and a write mask of \(writeMask.count)"))
    }
    bytes += repeatElement(0, count: size - bytes.count)
    writeMask += repeatElement(0, count: size - writeMask.count)
  }

  public func encode(to encoder: any Encoder) throws {
    func trimmed(_ array: [UInt8]) -> Base64Bytes {
      Base64Bytes(Array(array[..<(array.lastIndex { $0 != 0 }.map { $0 + 1 } ?? 0)]))
    }
    var container = encoder.container(keyedBy: CodingKeys.self)
    try container.encode(bytes.count, forKey: .size)
    try container.encode(trimmed(bytes), forKey: .bytes)
    try container.encode(trimmed(writeMask), forKey: .writeMask)
    try container.encode(bars, forKey: .bars)
  }
}
