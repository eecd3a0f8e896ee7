import Devices
import GuestMemory
import Synchronization

/// virtio-console (device type 3) with one port, the guest's `hvc0`: what the driver
/// transmits goes to a `ConsoleOutput`; host input fills the buffers the driver posts on
/// the receive queue. No multiport, no emergency write.
public final class VirtioConsole: VirtioDevice, @unchecked Sendable {
  public let deviceType: UInt16 = 3
  public let deviceFeatures: UInt64 = 0
  /// receiveq0 (device to driver), transmitq0 (driver to device).
  public let queueSizes: [UInt16] = [64, 64]
  static let receiveQueue = 0
  static let transmitQueue = 1

  private let memory: GuestMemory
  private let output: any ConsoleOutput
  private let queues = Mutex<[SplitVirtqueue]>([])
  /// Bytes the guest wrote and bytes it was given, for `--stats`.
  public let bytesTransmitted = Atomic<Int>(0)
  public let bytesReceived = Atomic<Int>(0)
  /// Raises a queue's interrupt: given at activation, dropped at reset.
  private let interruptLine = QueueInterruptLine()

  private func interrupt(_ queue: Int) { interruptLine.raise(queue) }
  /// The receive queue broke the rules while host input was delivered (the transport's
  /// owner sets DEVICE_NEEDS_RESET).
  public var queueBroken: @Sendable () -> Void = {}

  public init(memory: GuestMemory, output: any ConsoleOutput) {
    self.memory = memory
    self.output = output
  }

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
    // New receive buffers need nothing now: host input waits in the input pump until they come.
    guard index == Self.transmitQueue else { return true }
    let (notify, broken) = VirtqueueService.drain(queues, index: index, memory: memory) { chain in
      for buffer in chain.buffers where !buffer.isWritable && buffer.length > 0 {
        guard let bytes = try? memory.buffer(at: buffer.address, length: Int(buffer.length)) else { continue }
        output.write(UnsafeRawBufferPointer(bytes))
        bytesTransmitted.add(bytes.count, ordering: .relaxed)
      }
      return 0
    }
    if notify { interrupt(index) }
    return !broken
  }

  /// Hands host input to the guest: fills receive buffers the driver has posted; returns
  /// how many bytes were taken (0 while the driver has posted none, or is not ready).
  public func receive(_ bytes: ArraySlice<UInt8>) -> Int {
    var taken = 0
    var notify = false
    var broken = false
    queues.withLock { queues in
      guard queues.indices.contains(Self.receiveQueue) else { return }
      while taken < bytes.count {
        let next: DescriptorChain?
        do { next = try queues[Self.receiveQueue].next(in: memory) } catch {
          broken = true
          queues = []  // served no more until the driver resets the device
          break
        }
        guard let chain = next else { break }
        var written = 0
        for buffer in chain.writable where taken < bytes.count {
          let count = min(Int(buffer.length), bytes.count - taken)
          let start = bytes.startIndex + taken
          guard let target = try? memory.bufferForWriting(at: buffer.address, length: count) else { break }
          bytes[start..<start + count].withUnsafeBytes { target.copyMemory(from: $0) }
          memory.finishedWriting(at: buffer.address, length: count)
          taken += count
          written += count
        }
        guard (try? queues[Self.receiveQueue].complete(chain.head, written: UInt32(written), in: memory)) != nil
        else { break }
        notify = true
      }
      // (A queue found broken above is gone: nothing to decide on.)
      if notify, queues.indices.contains(Self.receiveQueue) {
        notify = (try? queues[Self.receiveQueue].shouldNotify(in: memory)) ?? true
      }
    }
    bytesReceived.add(taken, ordering: .relaxed)
    if broken { queueBroken() }
    if notify { interrupt(Self.receiveQueue) }
    return taken
  }
}
