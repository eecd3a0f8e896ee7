/// A SCSI command's outcome when it is not GOOD: the sense key and additional sense code
/// (SPC-4 §4.5), returned to the initiator as fixed-format sense data with CHECK CONDITION.
public struct SCSISense: Sendable, Equatable {
  public var key: UInt8
  public var code: UInt8
  public var qualifier: UInt8

  public init(key: UInt8, code: UInt8, qualifier: UInt8 = 0) {
    self.key = key
    self.code = code
    self.qualifier = qualifier
  }

  /// ILLEGAL REQUEST, INVALID COMMAND OPERATION CODE.
  public static let invalidOperation = SCSISense(key: 0x05, code: 0x20)
  /// ILLEGAL REQUEST, INVALID FIELD IN CDB.
  public static let invalidField = SCSISense(key: 0x05, code: 0x24)
  /// ILLEGAL REQUEST, LOGICAL BLOCK ADDRESS OUT OF RANGE.
  public static let outOfRange = SCSISense(key: 0x05, code: 0x21)
  /// ILLEGAL REQUEST, LOGICAL UNIT NOT SUPPORTED.
  public static let noSuchUnit = SCSISense(key: 0x05, code: 0x25)
  /// DATA PROTECT, WRITE PROTECTED.
  public static let writeProtected = SCSISense(key: 0x07, code: 0x27)
  /// MEDIUM ERROR, UNRECOVERED READ ERROR.
  public static let readError = SCSISense(key: 0x03, code: 0x11)

  /// The 18 bytes of fixed-format sense data (response code 0x70: current error).
  public var fixedFormat: [UInt8] {
    var bytes = [UInt8](repeating: 0, count: 18)
    bytes[0] = 0x70
    bytes[2] = key & 0x0F
    bytes[7] = 10  // additional sense length
    bytes[12] = code
    bytes[13] = qualifier
    return bytes
  }
}
