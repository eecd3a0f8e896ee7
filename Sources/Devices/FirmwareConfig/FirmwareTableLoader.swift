/// QEMU's linker/loader script, the fw_cfg file `etc/table-loader`: 128-byte commands that
/// tell the firmware to copy fw_cfg files into its memory (`allocate`), patch pointers from
/// one such file into another (`addPointer`) and fill in checksums (`addChecksum`). SeaBIOS
/// and OVMF run it to install the VMM's ACPI tables wherever they have room.
public struct FirmwareTableLoader: Sendable, Equatable {
  /// Where `allocate` puts a file: anywhere in high memory, or in the F segment below 1 MiB
  /// (where an OS looks for the RSDP).
  public enum Zone: UInt8, Sendable {
    case high = 1
    case fSegment = 2
  }

  /// Each command's size.
  public static let commandSize = 128
  /// A file name field's size (the name and its NUL).
  static let nameSize = 56

  /// The script: the commands, one after another.
  public private(set) var bytes: [UInt8] = []

  public init() {}

  /// Copies file `name` into memory of `zone`, aligned to `alignment` (a power of two).
  public mutating func allocate(_ name: String, alignment: UInt32, zone: Zone) {
    var command = Self.littleEndian(UInt32(1)) + Self.name(name)
    command += Self.littleEndian(alignment) + [zone.rawValue]
    append(command)
  }

  /// Adds the address of `source` (as allocated) to the `size`-byte little-endian field at
  /// `offset` in `destination`.
  public mutating func addPointer(in destination: String, at offset: UInt32, size: UInt8, to source: String) {
    var command = Self.littleEndian(UInt32(2)) + Self.name(destination) + Self.name(source)
    command += Self.littleEndian(offset) + [size]
    append(command)
  }

  /// Sets the byte at `offset` in `file` so that `length` bytes from `start` sum to zero (the
  /// byte is subtracted from, so it should start as zero).
  public mutating func addChecksum(in file: String, at offset: UInt32, start: UInt32, length: UInt32) {
    var command = Self.littleEndian(UInt32(3)) + Self.name(file)
    command += Self.littleEndian(offset) + Self.littleEndian(start) + Self.littleEndian(length)
    append(command)
  }

  private mutating func append(_ command: [UInt8]) {
    bytes += command + [UInt8](repeating: 0, count: Self.commandSize - command.count)
  }

  /// `name` in a NUL-padded field; names are the VMM's own constants, checked by `FirmwareConfigContents.addFile`.
  private static func name(_ name: String) -> [UInt8] {
    let utf8 = Array(name.utf8.prefix(nameSize - 1))
    return utf8 + [UInt8](repeating: 0, count: nameSize - utf8.count)
  }

  private static func littleEndian<T: FixedWidthInteger>(_ value: T) -> [UInt8] {
    FirmwareConfigContents.littleEndian(value)
  }
}
