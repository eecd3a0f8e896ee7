/// A Linux x86 bzImage: the setup header fields a loader needs, validated.
///
/// See Documentation/arch/x86/boot.rst. Only kernels that support the 64-bit
/// boot protocol (protocol 2.12+, `XLF_KERNEL_64`) are accepted.
public struct BzImage: Sendable {
  /// The whole file.
  public let bytes: [UInt8]
  /// Boot protocol version, e.g. 0x020F for 2.15.
  public let protocolVersion: UInt16
  /// Number of 512-byte setup sectors after the boot sector.
  public let setupSectors: Int
  /// The highest address the initrd may end at (inclusive).
  public let initrdAddressMaximum: UInt32
  /// The longest command line the kernel accepts, without the NUL.
  public let commandLineMaximum: UInt32
  /// How much memory the kernel needs from its load address while it starts.
  public let initSize: UInt32
  /// Where the setup header (the part copied into the zero page) starts and ends.
  public let headerRange: Range<Int>

  /// The protected-mode kernel: everything after the setup sectors.
  public var kernel: ArraySlice<UInt8> { bytes[(setupSectors + 1) * 512..<bytes.count] }

  static let headerStart = 0x1F1

  /// Parses and validates `bytes`; `name` is used in errors.
  public init(_ bytes: [UInt8], name: String) throws(LinuxBootError) {
    guard bytes.count >= 0x268 else { throw .notABzImage(name, "it is only \(bytes.count) bytes") }
    func u8(_ offset: Int) -> UInt8 { bytes[offset] }
    func u16(_ offset: Int) -> UInt16 { UInt16(bytes[offset]) | UInt16(bytes[offset + 1]) << 8 }
    func u32(_ offset: Int) -> UInt32 { UInt32(u16(offset)) | UInt32(u16(offset + 2)) << 16 }
    guard u16(0x1FE) == 0xAA55, u32(0x202) == 0x5372_6448 else {  // "HdrS"
      throw .notABzImage(name, "no Linux boot sector signature (0xAA55) and setup header magic (HdrS)")
    }
    protocolVersion = u16(0x206)
    guard protocolVersion >= 0x020C else {
      throw .unsupported(name, "boot protocol \(protocolVersion >> 8).\(protocolVersion & 0xFF) is older than 2.12")
    }
    guard u16(0x236) & 0x1 != 0 else {
      throw .unsupported(name, "the kernel has no 64-bit entry point (XLF_KERNEL_64); SwiftKVM boots x86-64 kernels")
    }
    let sectors = Int(u8(0x1F1))
    setupSectors = sectors == 0 ? 4 : sectors
    let systemSize = Int(u32(0x1F4)) * 16
    let expected = (setupSectors + 1) * 512 + systemSize
    guard bytes.count >= expected, systemSize > 0 else {
      throw .notABzImage(name, "it is truncated: \(bytes.count) bytes, the header promises \(expected)")
    }
    initrdAddressMaximum = u32(0x22C)
    commandLineMaximum = u32(0x238)
    initSize = u32(0x260)
    headerRange = Self.headerStart..<(0x202 + Int(u8(0x201)))
    self.bytes = bytes
  }
}

/// A Linux kernel, initrd or command line that cannot be booted, and why.
public enum LinuxBootError: Error, CustomStringConvertible, Equatable {
  case notABzImage(String, String)
  case unsupported(String, String)
  case commandLineTooLong(length: Int, maximum: Int)
  case doesNotFit(String, size: UInt64, available: UInt64)
  case memory(String)

  public var description: String {
    switch self {
    case .notABzImage(let name, let reason): "'\(name)' is not a Linux bzImage: \(reason)"
    case .unsupported(let name, let reason): "cannot boot '\(name)': \(reason)"
    case .commandLineTooLong(let length, let maximum):
      "the kernel command line is \(length) bytes; this kernel accepts at most \(maximum)"
    case .doesNotFit(let what, let size, let available):
      "\(what) needs \(size >> 20) MiB but only \(available >> 20) MiB of guest RAM is free for it; raise --memory"
    case .memory(let detail): "loading the kernel: \(detail)"
    }
  }
}
