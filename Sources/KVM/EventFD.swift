import CKVM
import Glibc

/// A Linux eventfd: a counter the kernel can signal (ioeventfd) or be signalled through (irqfd).
public final class EventFD: Sendable {
  /// The descriptor, to hand to `registerIOEvent` or `registerIRQFD`.
  public let fd: OwnedFileDescriptor

  /// Creates a blocking, close-on-exec eventfd with a counter of 0.
  public init() throws(KVMError) {
    let raw = eventfd(0, Int32(EFD_CLOEXEC))
    if raw < 0 { throw KVMError("eventfd", errno: errno) }
    fd = OwnedFileDescriptor(raw)
  }

  /// The raw descriptor number.
  public var rawValue: Int32 { fd.rawValue }

  /// Adds `count` to the counter (wakes a reader; raises the interrupt of an irqfd).
  public func signal(_ count: UInt64 = 1) {
    var value = count
    while Glibc.write(fd.rawValue, &value, 8) < 0 && errno == EINTR {}
  }

  /// Waits until the counter is non-zero, then returns it and resets it to 0.
  public func wait() throws(KVMError) -> UInt64 {
    var value: UInt64 = 0
    while true {
      if Glibc.read(fd.rawValue, &value, 8) == 8 { return value }
      if errno != EINTR { throw KVMError("read(eventfd)", errno: errno) }
    }
  }
}
