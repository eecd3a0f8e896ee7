/// A device the vCPU exit loop can dispatch port I/O or MMIO accesses to.
///
/// `offset` is relative to the start of the range the device was registered
/// at; `width` is 1, 2, 4 or 8 bytes. Reads return the value in the low
/// `width` bytes. Devices are called from any vCPU thread, concurrently, so
/// each keeps its state behind its own lock. A device never throws: whatever
/// the guest does, it answers as hardware would (ignore, all-ones, error bit).
public protocol IODevice: AnyObject, Sendable {
  /// A short name for statistics and device listings, e.g. `serial0`.
  var name: String { get }
  /// A guest read of `width` bytes at `offset`.
  func read(offset: UInt64, width: Int) -> UInt64
  /// A guest write of `width` bytes at `offset`.
  func write(offset: UInt64, width: Int, value: UInt64)
}

extension UInt64 {
  /// All ones in the low `width` bytes: what reading a floating bus returns.
  @inline(__always)
  public static func allOnes(width: Int) -> UInt64 {
    width >= 8 ? .max : (1 << UInt64(width * 8)) - 1
  }
}
