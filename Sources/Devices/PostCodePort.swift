import Synchronization

/// The POST diagnostic port 0x80: firmware and kernels write progress codes (and
/// use it as an I/O delay). Writes are kept so the last code can be read back.
public final class PostCodePort: IODevice {
  public static let port: UInt64 = 0x80

  public let name = "post-code"
  private let lastCode = Atomic<UInt8>(0)

  public init() {}

  /// The last code written.
  public var code: UInt8 { lastCode.load(ordering: .relaxed) }

  public func read(offset: UInt64, width: Int) -> UInt64 { UInt64(code) }

  public func write(offset: UInt64, width: Int, value: UInt64) {
    lastCode.store(UInt8(truncatingIfNeeded: value), ordering: .relaxed)
  }
}
