/// Arithmetic on untrusted numbers: sizes, offsets and counts read from an image file, a
/// state stream, a guest register or a client request. Each operation returns nil where
/// Swift's `+`, `*`, `<<` or `Int(_:)` would trap, so a hostile value becomes an error the
/// caller names, never a crash of the VMM.
///
/// ```swift
/// guard let end = offset.checkedAdding(length), end <= fileLength else { throw … }
/// guard let count = Int(checked: header.l1Size) else { throw … }
/// ```
extension FixedWidthInteger {
  /// `self + other`, or nil if it overflows.
  @inlinable
  public func checkedAdding(_ other: Self) -> Self? {
    let (sum, overflow) = addingReportingOverflow(other)
    return overflow ? nil : sum
  }

  /// `self - other`, or nil if it overflows (goes below zero for unsigned types).
  @inlinable
  public func checkedSubtracting(_ other: Self) -> Self? {
    let (difference, overflow) = subtractingReportingOverflow(other)
    return overflow ? nil : difference
  }

  /// `self * other`, or nil if it overflows.
  @inlinable
  public func checkedMultiplying(by other: Self) -> Self? {
    let (product, overflow) = multipliedReportingOverflow(by: other)
    return overflow ? nil : product
  }

  /// `self << shift`, or nil if bits would be lost (or `shift` is negative or too wide).
  @inlinable
  public func checkedShiftedLeft(by shift: Int) -> Self? {
    guard shift >= 0, shift < Self.bitWidth else { return self == 0 ? 0 : nil }
    let shifted = self << shift
    return shifted >> shift == self ? shifted : nil
  }

  /// The end of the range `[self, self + length)`, or nil if it overflows.
  @inlinable
  public func checkedEnd(length: Self) -> Self? { checkedAdding(length) }

  /// Whether `[self, self + length)` lies inside `[0, limit)` without overflowing.
  @inlinable
  public func fits(length: Self, within limit: Self) -> Bool {
    guard let end = checkedAdding(length) else { return false }
    return end <= limit
  }
}

extension Int {
  /// The value as an `Int`, or nil if it does not fit (e.g. a 64-bit size from a file).
  @inlinable
  public init?<Source: BinaryInteger>(checked value: Source) {
    self.init(exactly: value)
  }
}

extension UInt64 {
  /// The last byte of a region of `size` bytes at `self` (`self + size - 1`), or nil for an
  /// empty region or one that wraps around.
  @inlinable
  public func lastByte(ofRegionOfSize size: UInt64) -> UInt64? {
    guard size > 0 else { return nil }
    return checkedAdding(size - 1)
  }
}
