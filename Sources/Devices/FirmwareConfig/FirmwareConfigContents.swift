/// What a machine's fw_cfg device offers the firmware: items under QEMU's legacy keys (the
/// signature, the feature bits, RAM size, CPU counts…) and named files (`etc/e820`,
/// `bootorder`, ACPI tables…) listed in the file directory, as QEMU's `docs/specs/fw_cfg.rst`
/// describes them. Built once before the machine runs; read-only to the guest.
public struct FirmwareConfigContents: Sendable, Equatable {
  /// QEMU's item keys that SeaBIOS and Linux read.
  public enum Key {
    public static let signature: UInt16 = 0x0000
    public static let id: UInt16 = 0x0001
    public static let uuid: UInt16 = 0x0002
    public static let ramSize: UInt16 = 0x0003
    public static let noGraphic: UInt16 = 0x0004
    public static let cpuCount: UInt16 = 0x0005
    public static let bootMenu: UInt16 = 0x000E
    public static let maximumCPUs: UInt16 = 0x000F
    public static let fileDirectory: UInt16 = 0x0019
    /// Files get keys from here on, in the order they are added.
    public static let firstFile: UInt16 = 0x0020
  }

  /// The feature bits of `Key.id`: the port interface, and DMA.
  public static let traditionalInterface: UInt32 = 1 << 0
  public static let dmaInterface: UInt32 = 1 << 1
  /// The longest file name (the directory's 56-byte field holds it with its NUL).
  public static let maximumNameLength = 55
  /// Files at most (the keys left below the write-enable bit).
  public static let maximumFiles = 0x4000 - Int(Key.firstFile)

  /// Each item's bytes, by key.
  public private(set) var items: [UInt16: [UInt8]] = [:]
  /// The files in directory order, with their keys.
  public private(set) var files: [(name: String, key: UInt16)] = []

  public static func == (a: Self, b: Self) -> Bool {
    a.items == b.items && a.files.map(\.name) == b.files.map(\.name) && a.files.map(\.key) == b.files.map(\.key)
  }

  /// The signature ("QEMU") and the feature bits (ports and DMA), and an empty directory.
  public init() {
    items[Key.signature] = Array("QEMU".utf8)
    items[Key.id] = Self.littleEndian(Self.traditionalInterface | Self.dmaInterface)
    items[Key.fileDirectory] = Self.bigEndian(UInt32(0))
  }

  /// Sets the item under a legacy key (below `Key.firstFile` but not the directory, or an
  /// architecture key from 0x8000); a file's key, or an item over 4 GiB, is refused.
  public mutating func set(_ key: UInt16, _ bytes: [UInt8]) throws(FirmwareConfigError) {
    guard key < Key.firstFile && key != Key.fileDirectory || key >= 0x8000 else {
      throw FirmwareConfigError("fw_cfg key 0x\(String(key, radix: 16)) belongs to the file directory: use addFile")
    }
    guard bytes.count <= Int(UInt32.max) else {
      throw FirmwareConfigError("fw_cfg item 0x\(String(key, radix: 16)) is too large")
    }
    items[key] = bytes
  }

  /// Adds file `name` with `bytes`; the name must be new, printable ASCII and at most 55 bytes.
  public mutating func addFile(_ name: String, _ bytes: [UInt8]) throws(FirmwareConfigError) {
    let utf8 = Array(name.utf8)
    guard !utf8.isEmpty, utf8.count <= Self.maximumNameLength, utf8.allSatisfy({ (0x21...0x7E).contains($0) }) else {
      throw FirmwareConfigError(
        "fw_cfg file name '\(name)' must be 1–\(Self.maximumNameLength) printable ASCII characters without spaces")
    }
    guard !files.contains(where: { $0.name == name }) else {
      throw FirmwareConfigError("fw_cfg file '\(name)' is given twice")
    }
    guard files.count < Self.maximumFiles else {
      throw FirmwareConfigError("fw_cfg holds at most \(Self.maximumFiles) files")
    }
    guard bytes.count <= Int(UInt32.max) else { throw FirmwareConfigError("fw_cfg file '\(name)' is too large") }
    let key = Key.firstFile + UInt16(files.count)
    files.append((name, key))
    items[key] = bytes
    items[Key.fileDirectory] = directory
  }

  /// The key of file `name`, if there is one.
  public func key(of name: String) -> UInt16? { files.first { $0.name == name }?.key }

  /// The file directory: a big-endian count, then per file its size (BE32), key (BE16), two
  /// reserved bytes and its name in 56 NUL-padded bytes.
  private var directory: [UInt8] {
    var bytes = Self.bigEndian(UInt32(files.count))
    for (name, key) in files {
      bytes += Self.bigEndian(UInt32(items[key]?.count ?? 0))
      bytes += Self.bigEndian(key) + [0, 0]
      let utf8 = Array(name.utf8)
      bytes += utf8 + [UInt8](repeating: 0, count: 56 - utf8.count)
    }
    return bytes
  }

  /// `value`'s bytes, least significant first.
  public static func littleEndian<T: FixedWidthInteger>(_ value: T) -> [UInt8] {
    withUnsafeBytes(of: value.littleEndian) { Array($0) }
  }

  /// `value`'s bytes, most significant first.
  public static func bigEndian<T: FixedWidthInteger>(_ value: T) -> [UInt8] {
    withUnsafeBytes(of: value.bigEndian) { Array($0) }
  }
}

/// fw_cfg contents that cannot be built as asked.
public struct FirmwareConfigError: Error, CustomStringConvertible, Equatable {
  public let description: String
  public init(_ description: String) { self.description = description }
}
