import GuestMemory
import Synchronization

/// The loop every device runs when the driver kicks a queue: take each available chain,
/// let the device serve it, return it to the used ring, and decide on an interrupt.
enum VirtqueueService {
  /// Serves queue `index` of `queues` with `serve` (which returns the bytes it wrote into
  /// the chain's buffers). Returns whether to interrupt the driver, and whether the queue
  /// broke the rules (the transport then sets DEVICE_NEEDS_RESET).
  static func drain(
    _ queues: borrowing Mutex<[SplitVirtqueue]>, index: Int, memory: GuestMemory,
    serve: (DescriptorChain) -> UInt32
  ) -> (notify: Bool, broken: Bool) {
    queues.withLock { queues in
      guard queues.indices.contains(index) else { return (false, false) }
      var completed = false
      while true {
        do {
          guard let chain = try queues[index].next(in: memory) else { break }
          try queues[index].complete(chain.head, written: serve(chain), in: memory)
          completed = true
        } catch {
          return (completed, true)
        }
      }
      return (completed && ((try? queues[index].shouldNotify(in: memory)) ?? true), false)
    }
  }
}
