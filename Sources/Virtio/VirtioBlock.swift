import DiskImage
import Glibc
import GuestMemory
import Synchronization

/// virtio-blk (device type 2) over any `BlockBackend`: read, write, flush, get-id, discard,
/// write-zeroes. Requests are checked against the disk's size and the guest's memory; a bad
/// one gets IOERR or UNSUPP in its status byte and the device carries on.
///
/// With a `RequestExecutor`, every request of a kick runs on the executor's threads, so a
/// deep queue becomes parallel host I/O; each completes into the used ring as it finishes.
public final class VirtioBlock: VirtioDevice, @unchecked Sendable {
  public let deviceType: UInt16 = 2
  public let queueSizes: [UInt16] = [256]
  public let backend: any BlockBackend
  /// The serial number GET_ID returns (at most 20 bytes).
  public let serial: String
  private let memory: GuestMemory
  private let queues = Mutex<[SplitVirtqueue]>([])
  private let executor: (any RequestExecutor)?
  /// Requests handed to the executor and not yet completed.
  private let inFlight = Atomic<Int>(0)
  /// Bumped by every reset: a request that finishes after one must not touch the new rings.
  private let generation = Atomic<UInt64>(0)
  /// Requests served and bytes moved, for `--stats`.
  public let statistics = Mutex(Statistics())

  /// Per-device counters.
  public struct Statistics: Sendable, Equatable {
    public var reads = 0
    public var writes = 0
    public var flushes = 0
    public var other = 0
    public var bytesRead = 0
    public var bytesWritten = 0
    public var errors = 0

    mutating func add(_ more: Statistics) {
      reads += more.reads
      writes += more.writes
      flushes += more.flushes
      other += more.other
      bytesRead += more.bytesRead
      bytesWritten += more.bytesWritten
      errors += more.errors
    }
  }

  /// Feature bits (virtio 1.2 §5.2.3).
  public enum Feature {
    public static let segmentMaximum: UInt64 = 1 << 2
    public static let readOnly: UInt64 = 1 << 5
    public static let blockSize: UInt64 = 1 << 6
    public static let flush: UInt64 = 1 << 9
    public static let discard: UInt64 = 1 << 13
    public static let writeZeroes: UInt64 = 1 << 14
  }

  /// Raises a queue's interrupt: given at activation, dropped at reset.
  private let interruptLine = QueueInterruptLine()

  private func interrupt(_ queue: Int) { interruptLine.raise(queue) }

  public init(
    backend: any BlockBackend, memory: GuestMemory, serial: String = "skvm", executor: (any RequestExecutor)? = nil
  ) {
    self.backend = backend
    self.memory = memory
    self.executor = executor
    self.serial = String(serial.utf8.prefix(20)) ?? "skvm"
  }

  public var deviceFeatures: UInt64 {
    var features = Feature.segmentMaximum | Feature.blockSize | Feature.flush
    if backend.isReadOnly { features |= Feature.readOnly } else { features |= Feature.discard | Feature.writeZeroes }
    return features
  }

  /// capacity, size_max, seg_max, geometry, blk_size, …, discard and write-zeroes limits.
  public func readConfig(_ offset: Int, width: Int) -> UInt64 {
    var config = [UInt8](repeating: 0, count: 64)
    func put<T: FixedWidthInteger>(_ value: T, _ at: Int) {
      withUnsafeBytes(of: value.littleEndian) { config.replaceSubrange(at..<at + $0.count, with: $0) }
    }
    put(backend.size / VirtioBlockRequest.sectorSize, 0)
    // seg_max: a whole ring less the header and status descriptors, as QEMU offers. Linux
    // splits a request at this many segments, so 126 made three requests of an O_DIRECT
    // 1 MiB read (in the lane: 1 MiB dd 20-45 % slower than with one or two).
    put(UInt32(queueSizes[0] - 2), 12)
    put(UInt32(512), 20)  // blk_size
    put(UInt32(UInt32.max >> 9), 36)  // max_discard_sectors
    put(UInt32(1), 40)  // max_discard_seg
    put(UInt32(1), 44)  // discard_sector_alignment
    put(UInt32(UInt32.max >> 9), 48)  // max_write_zeroes_sectors
    put(UInt32(1), 52)  // max_write_zeroes_seg
    config[56] = 1  // write_zeroes_may_unmap
    guard offset >= 0, offset + width <= config.count else { return 0 }
    return (0..<width).reduce(0) { $0 | UInt64(config[offset + $1]) << (8 * UInt64($1)) }
  }

  public func writeConfig(_ offset: Int, width: Int, value: UInt64) {}  // writeback toggles not offered

  public func activate(queues: [SplitVirtqueue], features: UInt64, interrupt: @escaping @Sendable (Int) -> Void) {
    interruptLine.connect(interrupt)
    self.queues.withLock { $0 = queues }
  }

  public var queuePositions: [SplitVirtqueue.Position] { queues.withLock { $0.map(\.position) } }

  /// Forgets the rings once every request in flight has completed (as QEMU drains on reset).
  public func reset() {
    queues.withLock { queues in
      generation.add(1, ordering: .relaxed)
      queues = []
    }
    while inFlight.load(ordering: .acquiring) > 0 { usleep(100) }
    interruptLine.disconnect()
  }

  /// Serves every request available on queue `index` (the transport calls this on a kick);
  /// returns false if the queue broke the rules (the transport sets NEEDS_RESET).
  @discardableResult
  public func notify(queue index: Int, onIOThread: Bool) -> Bool {
    guard let executor else {
      let (notify, broken) = VirtqueueService.drain(queues, index: index, memory: memory) { serve($0) }
      if notify { interrupt(index) }
      return !broken
    }
    let (chains, broken, epoch) = queues.withLock { queues in
      let taken = VirtqueueService.takeAvailable(&queues, index: index, memory: memory)
      return (taken.chains, taken.broken, generation.load(ordering: .relaxed))
    }
    // A lone request with nothing else in flight (a queue depth of one, as a synchronous
    // reader makes) is served here on the queue's I/O thread: handing it to a worker would
    // only add a thread wake-up to its latency. Anything more goes to the workers.
    if onIOThread, chains.count == 1, inFlight.load(ordering: .acquiring) == 0 {
      inFlight.add(1, ordering: .relaxed)
      serveAndComplete(chains, queue: index, epoch: epoch)
      return !broken
    }
    // One job per worker, each serving its share of the batch in order and completing
    // its requests together: fewer wake-ups and ring locks than a job per request.
    let jobs = min(max(executor.parallelism, 1), chains.count)
    for job in 0..<jobs {
      let share = stride(from: job, to: chains.count, by: jobs).map { chains[$0] }
      inFlight.add(1, ordering: .relaxed)
      executor.submit { [self] in serveAndComplete(share, queue: index, epoch: epoch) }
    }
    return !broken
  }

  /// Serves `chains` in order, puts them on the used ring together and interrupts if the
  /// driver wants it; then counts them out of `inFlight` (the caller counted them in).
  private func serveAndComplete(_ chains: [DescriptorChain], queue index: Int, epoch: UInt64) {
    let completions = chains.map { (head: $0.head, written: serve($0)) }
    let notify = queues.withLock { queues in
      // A reset since the kick: these requests belong to rings that are gone.
      generation.load(ordering: .relaxed) == epoch
        && VirtqueueService.complete(completions, &queues, index: index, memory: memory)
    }
    if notify { interrupt(index) }
    inFlight.subtract(1, ordering: .releasing)
  }

  /// Performs one request; returns the bytes written into the driver's buffers.
  private func serve(_ chain: DescriptorChain) -> UInt32 {
    guard let request = VirtioBlockRequest(chain, memory: memory) else {
      statistics.withLock { $0.errors += 1 }
      return 0
    }
    var written: UInt32 = 0
    var counts = Statistics()
    let status: VirtioBlockRequest.Status
    do {
      status = try perform(request, written: &written, counts: &counts)
    } catch {
      status = .ioError
    }
    if status != .ok { counts.errors += 1 }
    statistics.withLock { $0.add(counts) }
    try? memory.store(status.rawValue, at: request.statusAddress)
    return written + 1
  }

  private func perform(_ request: VirtioBlockRequest, written: inout UInt32, counts: inout Statistics) throws
    -> VirtioBlockRequest.Status
  {
    let offset = request.sector.multipliedReportingOverflow(by: VirtioBlockRequest.sectorSize)
    let start = offset.partialValue
    switch VirtioBlockRequest.Kind(rawValue: request.type) {
    case .read?:
      guard !offset.overflow, request.data.allSatisfy(\.isWritable), fits(start, request.dataLength)
      else { return .ioError }
      // Several buffers: one vectored read (one system call for a raw image).
      if request.data.count == 1, let only = request.data.first {
        try backend.read(into: try memory.bufferForWriting(at: only.address, length: Int(only.length)), at: start)
      } else {
        let buffers = try request.data.map { try memory.bufferForWriting(at: $0.address, length: Int($0.length)) }
        try backend.read(into: buffers, at: start)
      }
      for buffer in request.data { memory.finishedWriting(at: buffer.address, length: Int(buffer.length)) }
      written = UInt32(request.dataLength)
      counts.reads += 1
      counts.bytesRead += request.dataLength
    case .write?:
      guard !backend.isReadOnly else { return .ioError }
      guard !offset.overflow, request.data.allSatisfy({ !$0.isWritable }), fits(start, request.dataLength)
      else { return .ioError }
      if request.data.count == 1, let only = request.data.first {
        try backend.write(
          UnsafeRawBufferPointer(try memory.buffer(at: only.address, length: Int(only.length))), at: start)
      } else {
        let buffers = try request.data.map {
          UnsafeRawBufferPointer(try memory.buffer(at: $0.address, length: Int($0.length)))
        }
        try backend.write(buffers, at: start)
      }
      counts.writes += 1
      counts.bytesWritten += request.dataLength
    case .flush?:
      try backend.flush()
      counts.flushes += 1
    case .getID?:
      guard let buffer = request.data.first, buffer.isWritable else { return .ioError }
      let id = Array(serial.utf8) + [UInt8](repeating: 0, count: 20 - serial.utf8.count)
      let length = min(Int(buffer.length), 20)
      try memory.write(Array(id.prefix(length)), to: buffer.address)
      written = UInt32(length)
      counts.other += 1
    case .discard?, .writeZeroes?:
      guard !backend.isReadOnly else { return .ioError }
      // Segments: sector (8), num_sectors (4), flags (4).
      for buffer in request.data where !buffer.isWritable {
        for segment in stride(from: 0, to: Int(buffer.length) - 15, by: 16) {
          let base = buffer.address + UInt64(segment)
          let sector = try memory.load(UInt64.self, at: base)
          let count = UInt64(try memory.load(UInt32.self, at: base + 8))
          let start = sector.multipliedReportingOverflow(by: VirtioBlockRequest.sectorSize)
          guard !start.overflow, fits(start.partialValue, Int(count * VirtioBlockRequest.sectorSize)) else {
            return .ioError
          }
          if request.type == VirtioBlockRequest.Kind.discard.rawValue {
            try backend.discard(at: start.partialValue, length: count * VirtioBlockRequest.sectorSize)
          } else {
            try backend.writeZeroes(at: start.partialValue, length: count * VirtioBlockRequest.sectorSize)
          }
        }
      }
      counts.other += 1
    case nil:
      return .unsupported
    }
    return .ok
  }

  private func fits(_ offset: UInt64, _ length: Int) -> Bool {
    let (end, overflow) = offset.addingReportingOverflow(UInt64(length))
    return !overflow && end <= backend.size
  }
}
