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
      return drain(&queues[index], memory: memory, serve: serve)
    }
  }

  /// The same loop on one queue the caller holds.
  static func drain(_ queue: inout SplitVirtqueue, memory: GuestMemory, serve: (DescriptorChain) -> UInt32)
    -> (notify: Bool, broken: Bool)
  {
    var completed = false
    while true {
      do {
        guard let chain = try queue.next(in: memory) else { break }
        try queue.complete(chain.head, written: serve(chain), in: memory)
        completed = true
      } catch {
        return (completed, true)
      }
    }
    return (completed && ((try? queue.shouldNotify(in: memory)) ?? true), false)
  }

  /// Takes every chain the driver has made available on queue `index` (for a device that
  /// serves them elsewhere); `broken` when the queue broke the rules after those chains.
  static func takeAvailable(_ queues: inout [SplitVirtqueue], index: Int, memory: GuestMemory)
    -> (chains: [DescriptorChain], broken: Bool)
  {
    guard queues.indices.contains(index) else { return ([], false) }
    var chains: [DescriptorChain] = []
    do {
      while let chain = try queues[index].next(in: memory) { chains.append(chain) }
    } catch {
      return (chains, true)
    }
    return (chains, false)
  }

  /// Returns finished chains (head, bytes written) to queue `index`; whether to interrupt the driver.
  static func complete(
    _ completions: [(head: UInt16, written: UInt32)], _ queues: inout [SplitVirtqueue], index: Int,
    memory: GuestMemory
  ) -> Bool {
    guard queues.indices.contains(index) else { return false }
    do {
      for completion in completions {
        try queues[index].complete(completion.head, written: completion.written, in: memory)
      }
      return try queues[index].shouldNotify(in: memory)
    } catch {
      return true
    }
  }
}
