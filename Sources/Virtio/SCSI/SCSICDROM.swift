/// A read-only CD-ROM drive as a SCSI logical unit (SPC-4 and MMC-6, the commands that Linux's
/// sr driver, its cdrom layer and SeaBIOS send): 2048-byte blocks of one medium of
/// `blockCount` blocks, one data track. Pure: each CDB (untrusted, any bytes) gives an
/// outcome; reading the medium is left to the caller (`.read`), which moves the bytes
/// straight into the guest's buffers.
public struct SCSICDROM: Sendable, Equatable {
  /// Bytes per block (a CD's Mode 1 sector).
  public static let blockSize = 2048
  /// Blocks on the medium (its size rounded down).
  public let blockCount: UInt64
  /// The unit serial number INQUIRY reports (VPD page 0x80).
  public let serial: String

  /// A drive holding a medium of `mediumSize` bytes.
  public init(mediumSize: UInt64, serial: String = "skvm-cd0") {
    blockCount = mediumSize / UInt64(Self.blockSize)
    self.serial = String(serial.utf8.prefix(20)) ?? "skvm-cd0"
  }

  /// What a command does.
  public enum Outcome: Sendable, Equatable {
    /// GOOD, with these bytes for the initiator (already cut to its allocation length).
    case data([UInt8])
    /// GOOD, once `length` bytes of the medium from byte `offset` are transferred.
    case read(offset: UInt64, length: Int)
    /// CHECK CONDITION with this sense.
    case checkCondition(SCSISense)
  }

  /// Operation codes served.
  enum Operation {
    static let testUnitReady: UInt8 = 0x00
    static let requestSense: UInt8 = 0x03
    static let inquiry: UInt8 = 0x12
    static let modeSense6: UInt8 = 0x1A
    static let startStopUnit: UInt8 = 0x1B
    static let preventAllowRemoval: UInt8 = 0x1E
    static let readCapacity10: UInt8 = 0x25
    static let read10: UInt8 = 0x28
    static let write10: UInt8 = 0x2A
    static let synchronizeCache: UInt8 = 0x35
    static let readTOC: UInt8 = 0x43
    static let getConfiguration: UInt8 = 0x46
    static let getEventStatus: UInt8 = 0x4A
    static let modeSense10: UInt8 = 0x5A
    static let read16: UInt8 = 0x88
    static let write16: UInt8 = 0x8A
    static let reportLUNs: UInt8 = 0xA0
    static let read12: UInt8 = 0xA8
    static let write12: UInt8 = 0xAA
  }

  /// The CDB's length by its group code (SPC-4 §4.2.5.1); nil for groups with no fixed length.
  static func length(of opcode: UInt8) -> Int? {
    switch opcode >> 5 {
    case 0: 6
    case 1, 2: 10
    case 4: 16
    case 5: 12
    default: nil
    }
  }

  /// Carries out `cdb` (the CDB field as the initiator filled it; bytes past the command's
  /// length are ignored).
  public func execute(_ cdb: [UInt8]) -> Outcome {
    guard let opcode = cdb.first else { return .checkCondition(.invalidOperation) }
    guard let length = Self.length(of: opcode), cdb.count >= length else {
      return .checkCondition(.invalidOperation)
    }
    func be16(_ at: Int) -> Int { Int(cdb[at]) << 8 | Int(cdb[at + 1]) }
    func be32(_ at: Int) -> UInt64 { (0..<4).reduce(0) { $0 << 8 | UInt64(cdb[at + $1]) } }
    switch opcode {
    case Operation.testUnitReady, Operation.startStopUnit, Operation.preventAllowRemoval,
      Operation.synchronizeCache:
      return .data([])
    case Operation.requestSense:
      // Sense goes back with each failing command (autosense): nothing is pending here.
      return .data(Array(SCSISense(key: 0, code: 0).fixedFormat.prefix(Int(cdb[4]))))
    case Operation.inquiry:
      return inquiry(vitalProductData: cdb[1] & 1 != 0, page: cdb[2], allocation: be16(3))
    case Operation.modeSense6:
      return modeSense(page: cdb[2] & 0x3F, control: cdb[2] >> 6, allocation: Int(cdb[4]), long: false)
    case Operation.modeSense10:
      return modeSense(page: cdb[2] & 0x3F, control: cdb[2] >> 6, allocation: be16(7), long: true)
    case Operation.readCapacity10:
      guard blockCount > 0 else { return .checkCondition(SCSISense(key: 0x02, code: 0x3A)) }
      return .data(Self.be32(UInt32(clamping: blockCount - 1)) + Self.be32(UInt32(Self.blockSize)))
    case Operation.read10:
      return read(block: be32(2), count: UInt64(be16(7)))
    case Operation.read12:
      return read(block: be32(2), count: be32(6))
    case Operation.read16:
      return read(block: be32(2) << 32 | be32(6), count: be32(10))
    case Operation.write10, Operation.write12, Operation.write16:
      return .checkCondition(.writeProtected)
    case Operation.readTOC:
      return tableOfContents(msf: cdb[1] & 0x02 != 0, format: cdb[2] & 0x0F, track: cdb[6], allocation: be16(7))
    case Operation.getConfiguration:
      return configuration(startingFeature: be16(2), allocation: be16(7))
    case Operation.getEventStatus:
      // Only polled requests are supported (MMC-6 §6.7), as on most drives.
      guard cdb[1] & 1 != 0 else { return .checkCondition(.invalidField) }
      let media: [UInt8] =
        cdb[4] & 0x10 != 0
        ? [0, 6, 0x04, 0x10, 0, 0x02, 0, 0]  // media class: no change, medium present
        : [0, 2, 0x80, 0x10]  // no event of the classes asked for
      return .data(Array(media.prefix(be16(7))))
    case Operation.reportLUNs:
      let list: [UInt8] = [0, 0, 0, 8, 0, 0, 0, 0] + [UInt8](repeating: 0, count: 8)  // LUN 0 only
      return .data(Array(list.prefix(Int(clamping: be32(6)))))
    default:
      return .checkCondition(.invalidOperation)
    }
  }

  /// `count` blocks from `block`, checked against the medium (a count of zero moves nothing,
  /// but its block must still be on the medium).
  private func read(block: UInt64, count: UInt64) -> Outcome {
    let (end, overflow) = block.addingReportingOverflow(count)
    guard !overflow, block < blockCount, end <= blockCount else { return .checkCondition(.outOfRange) }
    return .read(offset: block * UInt64(Self.blockSize), length: Int(count) * Self.blockSize)
  }

  private func inquiry(vitalProductData: Bool, page: UInt8, allocation: Int) -> Outcome {
    var bytes: [UInt8]
    if !vitalProductData {
      guard page == 0 else { return .checkCondition(.invalidField) }
      // CD/DVD device, removable medium, SPC-3, response format 2, 31 more bytes.
      bytes = [0x05, 0x80, 0x05, 0x02, 31, 0, 0, 0]
      bytes += Array("SKVM    ".utf8) + Array("CD-ROM          ".utf8) + Array("1.0 ".utf8)
    } else {
      switch page {
      case 0x00: bytes = [0x05, 0x00, 0, 2, 0x00, 0x80]  // the pages supported
      case 0x80:
        let serial = Array(serial.utf8)
        bytes = [0x05, 0x80, 0, UInt8(serial.count)] + serial
      default: return .checkCondition(.invalidField)
      }
    }
    return .data(Array(bytes.prefix(allocation)))
  }

  /// The CD capabilities and mechanical status page (MMC-6 §7.8, page 0x2A): reads CD-ROM
  /// media, no writing, a tray that locks and ejects.
  static let capabilitiesPage: [UInt8] = {
    var page = [UInt8](repeating: 0, count: 28)
    page[0] = 0x2A
    page[1] = 26
    page[6] = 0x29  // lock, eject, tray loading
    page[8] = 0x02  // maximum read speed 706 kB/s (obsolete, but read)
    page[9] = 0xC2
    page[14] = 0x02  // current read speed
    page[15] = 0xC2
    return page
  }()

  private func modeSense(page: UInt8, control: UInt8, allocation: Int, long: Bool) -> Outcome {
    // Saved values are not supported (SPC-4 §6.11); current, changeable and default are.
    guard control != 3 else { return .checkCondition(SCSISense(key: 0x05, code: 0x39)) }
    guard page == 0x2A || page == 0x3F else { return .checkCondition(.invalidField) }
    // Changeable values: none can change.
    let pages =
      control == 1 ? [0x2A, 26] + [UInt8](repeating: 0, count: 26) : Self.capabilitiesPage
    // Header: mode data length, medium type, write-protected, no block descriptors.
    var bytes: [UInt8]
    if long {
      let length = 6 + pages.count
      bytes = [UInt8(length >> 8), UInt8(length & 0xFF), 0, 0x80, 0, 0, 0, 0] + pages
    } else {
      bytes = [UInt8(3 + pages.count), 0, 0x80, 0] + pages
    }
    return .data(Array(bytes.prefix(allocation)))
  }

  /// READ TOC/PMA/ATIP formats 0 (the table of contents: track 1 and the lead-out) and 1
  /// (multi-session information: one session), addresses as LBAs or MSF.
  private func tableOfContents(msf: Bool, format: UInt8, track: UInt8, allocation: Int) -> Outcome {
    func address(_ block: UInt64) -> [UInt8] {
      guard msf else { return Self.be32(UInt32(clamping: block)) }
      let frames = block + 150  // the two-second pregap
      return [0, UInt8(clamping: frames / (75 * 60)), UInt8(frames / 75 % 60), UInt8(frames % 75)]
    }
    var body: [UInt8]
    switch format {
    case 0:
      guard track <= 1 || track == 0xAA else { return .checkCondition(.invalidField) }
      body = [1, 1]  // first and last track
      if track <= 1 { body += [0, 0x14, 1, 0] + address(0) }  // track 1: data, LBA 0
      body += [0, 0x14, 0xAA, 0] + address(blockCount)  // the lead-out
    case 1:
      body = [1, 1, 0, 0x14, 1, 0] + address(0)  // session 1 starts with track 1 at 0
    default:
      return .checkCondition(.invalidField)
    }
    let bytes = [UInt8(body.count >> 8), UInt8(body.count & 0xFF)] + body
    return .data(Array(bytes.prefix(allocation)))
  }

  /// GET CONFIGURATION: the current profile (CD-ROM, 0x0008) and the profile list feature.
  private func configuration(startingFeature: Int, allocation: Int) -> Outcome {
    var features: [UInt8] = []
    if startingFeature == 0 { features = [0, 0, 0x03, 4, 0x00, 0x08, 0x01, 0] }  // profile list: CD-ROM, current
    let length = UInt32(4 + features.count)
    let bytes = Self.be32(length) + [0, 0, 0x00, 0x08] + features
    return .data(Array(bytes.prefix(allocation)))
  }

  static func be32(_ value: UInt32) -> [UInt8] {
    [UInt8(value >> 24), UInt8(value >> 16 & 0xFF), UInt8(value >> 8 & 0xFF), UInt8(value & 0xFF)]
  }
}
