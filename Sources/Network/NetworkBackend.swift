import Glibc

/// A host-side network back end of a NIC: a tap, a macvtap, or user-mode networking.
///
/// Back ends own no thread. The VMM's network pump polls what `preparePoll` asks for and
/// calls `service` with the result; guest frames arrive through `send` on the NIC's transmit
/// thread. A back end holds at most what it cannot deliver now (one frame for a tap, a small
/// bounded queue for user networking) and stops reading its host side while it holds it.
public protocol NetworkBackend: AnyObject, Sendable {
  /// What it is, for messages and the monitor (`tap0`, `user`, `/dev/tap5`).
  var description: String { get }
  /// Bytes of virtio-net header (`virtio_net_hdr_v1`) the back end carries before every frame
  /// in both directions: 12 for a tap with IFF_VNET_HDR, 0 for plain Ethernet frames.
  var headerLength: Int { get }
  /// Offload feature bits (virtio-net numbering) the back end can carry for the guest.
  var offloadFeatures: UInt64 { get }
  /// The guest negotiated these features: turn on the matching receive offloads.
  func setNegotiatedFeatures(_ features: UInt64)
  /// Where received frames go: `deliver` returns false while the guest has no room (the back
  /// end keeps the frame and offers it again after the next `service`); `wake` makes the pump
  /// call `service` soon (from any thread).
  func attach(deliver: @escaping @Sendable (UnsafeRawBufferPointer) -> Bool, wake: @escaping @Sendable () -> Void)
  /// Sends one frame from the guest, given as a gather list (header first when `headerLength`
  /// is not 0). False when the host side refused it (counted as a drop, never as sent).
  func send(_ parts: UnsafeBufferPointer<iovec>) -> Bool
  /// Appends the descriptors to poll now; returns the longest wait in milliseconds (-1: none).
  func preparePoll(_ descriptors: inout [pollfd]) -> Int32
  /// Handles what the poll found (`descriptors` are those `preparePoll` appended, in order,
  /// with their results), first offering any frame held back.
  func service(_ descriptors: ArraySlice<pollfd>)
  /// Releases the host side (the pump has stopped).
  func close()
  /// The NIC's transmit thread finished a burst of `send`s (the driver's ring is empty): a
  /// back end that must tell its poller about new work does it once here. Nothing by default.
  func finishSending()
  /// One queue of several on the host side (a multiqueue tap): attached while its queue pair
  /// is in use, detached while the guest's driver leaves it idle. Nothing by default.
  func setQueueEnabled(_ enabled: Bool)
}

extension NetworkBackend {
  public func finishSending() {}
  public func setQueueEnabled(_ enabled: Bool) {}
}

/// Why a network back end could not be set up: what was wrong, with the value, and what to do.
public struct NetworkError: Error, CustomStringConvertible, Equatable {
  public let description: String
  public init(_ description: String) { self.description = description }

  /// An errno value's text.
  public static func text(_ code: Int32) -> String { String(cString: strerror(code)) }
}
