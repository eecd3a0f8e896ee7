import Glibc
import Network
import Synchronization

/// One receive/transmit queue pair of a virtio-net device and the back end it serves (a
/// queue of a multiqueue tap, or the whole back end when there is one pair). Its locks are
/// its own: pairs never wait for each other.
final class VirtioNetQueuePair: @unchecked Sendable {
  let backend: any NetworkBackend

  /// The receive side: its queue, the filter, and what was negotiated. Taken by the pump
  /// for every frame and briefly by the control queue.
  struct ReceiveSide {
    var queue: SplitVirtqueue?
    var filter: VirtioNetReceiveFilter
    var mergeable = false
    /// Frames were delivered in a batch whose interrupt is still to be decided.
    var interruptPending = false
    /// The chains of the frame being placed (kept for its capacity).
    var scratch: [DescriptorChain] = []
  }
  let receive: Mutex<ReceiveSide>
  let transmit = Mutex<SplitVirtqueue?>(nil)
  /// The chain being sent, its buffer list reused (touched under `transmit`'s lock only).
  var transmitChain = DescriptorChain(head: 0, buffers: [])
  /// Gather list for one transmitted frame (touched under `transmit`'s lock only).
  let gather = UnsafeMutableBufferPointer<iovec>.allocate(capacity: maximumGather)
  static let maximumGather = SplitVirtqueue.maximumIndirectDescriptors + 1

  /// Serves the pair's queues in the device's place (vhost-net), set before the driver starts.
  var dataPlane: (any VirtioNetDataPlane)?
  let offloaded = Atomic<Bool>(false)
  /// Tells the pair's pump the driver posted receive buffers (held frames may fit now).
  var receiveRoom: @Sendable () -> Void = {}

  init(backend: any NetworkBackend, filter: VirtioNetReceiveFilter) {
    self.backend = backend
    receive = Mutex(ReceiveSide(queue: nil, filter: filter))
  }

  deinit { gather.deallocate() }

  /// Whether the data plane serves the pair's queues now.
  var isOffloaded: Bool { offloaded.load(ordering: .acquiring) }
}
