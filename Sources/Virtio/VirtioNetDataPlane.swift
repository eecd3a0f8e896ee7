/// A data path that serves virtio-net's receive and transmit queues outside the device (the
/// kernel's vhost-net). The device keeps its configuration and the control queue.
public protocol VirtioNetDataPlane: AnyObject, Sendable {
  /// Takes over the two rings with the negotiated features; false when it cannot (the device
  /// then serves them itself).
  func start(receive: SplitVirtqueue, transmit: SplitVirtqueue, features: UInt64) -> Bool
  /// Stops serving the rings (a reset).
  func stop()
  /// Where the receive and transmit rings stand (read while the machine is paused).
  var positions: [SplitVirtqueue.Position] { get }
  /// The driver changed the receive filter: the data plane applies it (none of skvm's code
  /// sees its frames).
  func setReceiveFilter(_ filter: VirtioNetReceiveFilter)
  /// A kick that reached the device instead of the data path (an MMIO exit, or one read just
  /// before the hand-over): pass it on.
  func kick(queue: Int)
}
