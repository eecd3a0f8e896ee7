/// A guest-physical access that does not fall entirely inside guest RAM.
///
/// Guests make addresses up; every access through `GuestMemory` is checked and
/// fails with this error instead of touching memory outside the guest.
public struct GuestMemoryError: Error, Equatable, CustomStringConvertible {
  /// The first guest-physical address of the access.
  public let address: UInt64
  /// Its length in bytes.
  public let length: UInt64

  public init(address: UInt64, length: UInt64) {
    self.address = address
    self.length = length
  }

  public var description: String {
    "guest-physical access of \(length) bytes at 0x\(String(address, radix: 16)) is outside guest RAM"
  }
}
