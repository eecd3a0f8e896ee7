import CSystemCalls
import GuestMemory
import Synchronization

/// virtio-rng (device type 4): fills every buffer the driver offers with bytes from the
/// host's `getrandom`.
public final class VirtioEntropy: VirtioDevice, @unchecked Sendable {
  public let deviceType: UInt16 = 4
  public let deviceFeatures: UInt64 = 0
  public let queueSizes: [UInt16] = [64]
  private let memory: GuestMemory
  private let queues = Mutex<[SplitVirtqueue]>([])
  /// Bytes handed to the guest, for `--stats`.
  public let bytesServed = Atomic<Int>(0)
  /// Raises a queue's interrupt: given at activation, dropped at reset.
  private let interruptLine = QueueInterruptLine()

  private func interrupt(_ queue: Int) { interruptLine.raise(queue) }

  public init(memory: GuestMemory) { self.memory = memory }

  public func readConfig(_ offset: Int, width: Int) -> UInt64 { 0 }
  public func writeConfig(_ offset: Int, width: Int, value: UInt64) {}
  public func activate(queues: [SplitVirtqueue], features: UInt64, interrupt: @escaping @Sendable (Int) -> Void) {
    interruptLine.connect(interrupt)
    self.queues.withLock { $0 = queues }
  }

  public var queuePositions: [SplitVirtqueue.Position] { queues.withLock { $0.map(\.position) } }
  public func reset() {
    queues.withLock { $0 = [] }
    interruptLine.disconnect()
  }

  public func notify(queue index: Int, onIOThread: Bool) -> Bool {
    let (notify, broken) = VirtqueueService.drain(queues, index: index, memory: memory) { fill($0) }
    if notify { interrupt(index) }
    return !broken
  }

  /// Fills every writable buffer of `chain` with random bytes; returns how many.
  private func fill(_ chain: DescriptorChain) -> UInt32 {
    var written = 0
    for buffer in chain.writable where buffer.length > 0 {
      guard let target = try? memory.bufferForWriting(at: buffer.address, length: Int(buffer.length)),
        let base = target.baseAddress
      else { continue }
      var filled = 0
      while filled < target.count {
        let count = csys_getrandom(base + filled, target.count - filled)
        if count <= 0 { break }
        filled += count
      }
      memory.finishedWriting(at: buffer.address, length: filled)
      written += filled
    }
    bytesServed.add(written, ordering: .relaxed)
    return UInt32(clamping: written)
  }
}
