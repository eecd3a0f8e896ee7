import DiskImage
import Foundation
import GuestMemory
import Synchronization
import Testing

@testable import Virtio

/// virtio-blk requests served against a real image file, through hand-written rings.
@Suite("virtio-blk requests")
struct VirtioBlockTests {
  static let table: UInt64 = 0x1000
  static let available: UInt64 = 0x2000
  static let used: UInt64 = 0x3000

  final class Rig {
    let memory: GuestMemory
    let device: VirtioBlock
    let path: String
    var availableIndex: UInt16 = 0
    var nextDescriptor: UInt16 = 0
    var interrupts = 0

    init(
      readOnly: Bool = false, executor: (any RequestExecutor)? = nil,
      wrap: (any BlockBackend) -> any BlockBackend = { $0 }
    ) throws {
      memory = try GuestMemory(ranges: [(0, 1 << 20)])
      path = FileManager.default.temporaryDirectory.appendingPathComponent("skvm-vblk-\(UUID().uuidString).raw").path
      try Data((0..<(1 << 20)).map { UInt8(truncatingIfNeeded: $0 / 512) }).write(to: URL(fileURLWithPath: path))
      device = VirtioBlock(
        backend: wrap(try RawImage(path: path, readOnly: readOnly)), memory: memory, serial: "disk-0",
        executor: executor)
      let queue = SplitVirtqueue(
        size: 16, descriptorTable: VirtioBlockTests.table, availableRing: VirtioBlockTests.available,
        usedRing: VirtioBlockTests.used)
      device.activate(queues: [queue], features: 0)
    }

    deinit { try? FileManager.default.removeItem(atPath: path) }

    /// Offers a chain of (address, length, writable) buffers; returns its head.
    @discardableResult
    func offer(_ buffers: [(UInt64, UInt32, Bool)]) throws -> UInt16 {
      let head = nextDescriptor
      for (position, buffer) in buffers.enumerated() {
        let index = nextDescriptor
        let base = VirtioBlockTests.table + 16 * UInt64(index)
        try memory.store(buffer.0, at: base)
        try memory.store(buffer.1, at: base + 8)
        let more = position < buffers.count - 1
        try memory.store(UInt16((more ? 1 : 0) | (buffer.2 ? 2 : 0)), at: base + 12)
        try memory.store(UInt16(index + 1), at: base + 14)
        nextDescriptor += 1
      }
      try memory.store(head, at: VirtioBlockTests.available + 4 + 2 * UInt64(availableIndex % 16))
      availableIndex &+= 1
      try memory.store(availableIndex, at: VirtioBlockTests.available + 2)
      return head
    }

    func header(_ type: UInt32, sector: UInt64, at address: UInt64) throws {
      try memory.store(type, at: address)
      try memory.store(UInt32(0), at: address + 4)
      try memory.store(sector, at: address + 8)
    }

    func status(at address: UInt64) throws -> UInt8 { try memory.load(UInt8.self, at: address) }
  }

  @Test("Read, write, flush and get-id do what they say; data lands in the image file")
  func basics() throws {
    let rig = try Rig()
    try rig.header(0, sector: 3, at: 0x10000)
    try rig.offer([(0x10000, 16, false), (0x20000, 512, true), (0x21000, 512, true), (0x30000, 1, true)])
    #expect(rig.device.notify(queue: 0))
    #expect(try rig.status(at: 0x30000) == 0)
    #expect(try rig.memory.bytes(at: 0x20000, length: 512).allSatisfy { $0 == 3 })
    #expect(try rig.memory.bytes(at: 0x21000, length: 512).allSatisfy { $0 == 4 })
    #expect(try rig.memory.load(UInt32.self, at: Self.used + 8) == 1025, "bytes written include the status byte")

    try rig.header(1, sector: 10, at: 0x11000)
    try rig.memory.write([UInt8](repeating: 0xEE, count: 1024), to: 0x22000)
    try rig.offer([(0x11000, 16, false), (0x22000, 1024, false), (0x30001, 1, true)])
    try rig.header(4, sector: 0, at: 0x12000)
    try rig.offer([(0x12000, 16, false), (0x30002, 1, true)])
    try rig.header(8, sector: 0, at: 0x13000)
    try rig.offer([(0x13000, 16, false), (0x23000, 20, true), (0x30003, 1, true)])
    #expect(rig.device.notify(queue: 0))
    #expect(try [rig.status(at: 0x30001), rig.status(at: 0x30002), rig.status(at: 0x30003)] == [0, 0, 0])
    let file = try Data(contentsOf: URL(fileURLWithPath: rig.path))
    #expect(file[10 * 512..<12 * 512].allSatisfy { $0 == 0xEE } && file[12 * 512] == 12)
    #expect(try rig.memory.bytes(at: 0x23000, length: 6) == Array("disk-0".utf8))
    let stats = rig.device.statistics.withLock { $0 }
    #expect(stats.reads == 1 && stats.writes == 1 && stats.flushes == 1 && stats.bytesWritten == 1024)
  }

  @Test("Bad requests get IOERR or UNSUPP, and the next request is served")
  func badRequests() throws {
    let rig = try Rig(readOnly: true)
    try rig.header(0, sector: 2047, at: 0x10000)  // the last sector, then one past the end
    try rig.offer([(0x10000, 16, false), (0x20000, 1024, true), (0x30000, 1, true)])
    try rig.header(1, sector: 0, at: 0x11000)  // a write to a read-only disk
    try rig.offer([(0x11000, 16, false), (0x22000, 512, false), (0x30001, 1, true)])
    try rig.header(99, sector: 0, at: 0x12000)  // no such request type
    try rig.offer([(0x12000, 16, false), (0x30002, 1, true)])
    try rig.header(0, sector: .max, at: 0x13000)  // sector × 512 overflows
    try rig.offer([(0x13000, 16, false), (0x24000, 512, true), (0x30003, 1, true)])
    try rig.header(0, sector: 0, at: 0x14000)
    try rig.offer([(0x14000, 16, false), (0x25000, 512, true), (0x30004, 1, true)])
    #expect(rig.device.notify(queue: 0))
    #expect(try (0..<5).map { try rig.status(at: 0x30000 + $0) } == [1, 1, 2, 1, 0])
    #expect(rig.device.deviceFeatures & VirtioBlock.Feature.readOnly != 0)
    #expect(rig.device.statistics.withLock { $0.errors } == 4)
  }

  @Test("A chain pointing outside guest memory breaks the queue (NEEDS_RESET), not the VMM")
  func hostileChain() throws {
    let rig = try Rig()
    try rig.header(0, sector: 0, at: 0x10000)
    try rig.offer([(0x10000, 16, false), ((1 << 20) - 8, 512, true), (0x30000, 1, true)])
    #expect(!rig.device.notify(queue: 0))
  }

  /// Runs each job on a new thread.
  struct ThreadPerJob: RequestExecutor {
    var parallelism = 8
    func submit(_ work: @escaping @Sendable () -> Void) { Thread { work() }.start() }
  }

  /// Reads that take a while and record how many ran at once.
  final class SlowReads: BlockBackend, @unchecked Sendable {
    let inner: any BlockBackend
    let running = Mutex((now: 0, peak: 0))
    /// The threads that served reads.
    let readers = Mutex<Set<UInt>>([])
    init(_ inner: any BlockBackend) { self.inner = inner }
    var size: UInt64 { inner.size }
    var isReadOnly: Bool { inner.isReadOnly }
    func read(into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64) throws(DiskImageError) {
      running.withLock {
        $0.now += 1
        $0.peak = max($0.peak, $0.now)
      }
      readers.withLock { _ = $0.insert(UInt(pthread_self())) }
      usleep(50_000)
      running.withLock { $0.now -= 1 }
      try inner.read(into: buffer, at: offset)
    }
    func write(_ bytes: UnsafeRawBufferPointer, at offset: UInt64) throws(DiskImageError) {
      try inner.write(bytes, at: offset)
    }
    func flush() throws(DiskImageError) { try inner.flush() }
    func writeZeroes(at offset: UInt64, length: UInt64) throws(DiskImageError) {
      try inner.writeZeroes(at: offset, length: length)
    }
    func discard(at offset: UInt64, length: UInt64) throws(DiskImageError) {
      try inner.discard(at: offset, length: length)
    }
    func close() { inner.close() }
  }

  @Test("With an executor, one kick's requests run in parallel and each completes with the right data")
  func requestsInFlight() throws {
    var slow: SlowReads?
    let rig = try Rig(executor: ThreadPerJob()) { backend in
      let wrapped = SlowReads(backend)
      slow = wrapped
      return wrapped
    }
    // Five requests of three descriptors fill the 16-entry ring.
    for request in 0..<5 {
      try rig.header(0, sector: UInt64(100 + request), at: 0x10000 + 0x100 * UInt64(request))
      try rig.offer([
        (0x10000 + 0x100 * UInt64(request), 16, false), (0x20000 + 0x1000 * UInt64(request), 512, true),
        (0x30000 + UInt64(request), 1, true),
      ])
      try rig.memory.store(UInt8(0xFF), at: 0x30000 + UInt64(request))
    }
    #expect(rig.device.notify(queue: 0))
    let deadline = Date().addingTimeInterval(10)
    while try rig.memory.load(UInt16.self, at: Self.used + 2) < 5, Date() < deadline { usleep(1000) }
    #expect(try rig.memory.load(UInt16.self, at: Self.used + 2) == 5, "every request completed")
    for request in 0..<5 {
      #expect(try rig.status(at: 0x30000 + UInt64(request)) == 0)
      #expect(
        try rig.memory.bytes(at: 0x20000 + 0x1000 * UInt64(request), length: 512).allSatisfy {
          $0 == UInt8(100 + request)
        })
    }
    #expect((slow?.running.withLock { $0.peak } ?? 0) >= 3, "requests overlapped")
    // A reset waits for what is in flight, then the rings are forgotten.
    rig.device.reset()
    #expect(slow?.running.withLock { $0.now } == 0)
  }

  @Test(
    "A lone request on the I/O thread is served there, no hand-off; a vCPU's kick or a batch goes to the workers",
    arguments: [(true, 1, true), (false, 1, false), (true, 2, false)])
  func loneRequestsServedOnIOThread(onIOThread: Bool, requests: Int, servedOnCaller: Bool) throws {
    var slow: SlowReads?
    let rig = try Rig(executor: ThreadPerJob(parallelism: 2)) { backend in
      let wrapped = SlowReads(backend)
      slow = wrapped
      return wrapped
    }
    for request in 0..<requests {
      try rig.header(0, sector: UInt64(200 + request), at: 0x10000 + 0x100 * UInt64(request))
      try rig.offer([
        (0x10000 + 0x100 * UInt64(request), 16, false), (0x20000 + 0x1000 * UInt64(request), 512, true),
        (0x30000 + UInt64(request), 1, true),
      ])
    }
    #expect(rig.device.notify(queue: 0, onIOThread: onIOThread))
    if servedOnCaller {
      #expect(try rig.memory.load(UInt16.self, at: Self.used + 2) == 1, "completed before the kick returned")
    }
    let deadline = Date().addingTimeInterval(10)
    while try rig.memory.load(UInt16.self, at: Self.used + 2) < requests, Date() < deadline { usleep(1000) }
    #expect(try rig.memory.load(UInt16.self, at: Self.used + 2) == requests, "every request completed")
    for request in 0..<requests {
      #expect(try rig.status(at: 0x30000 + UInt64(request)) == 0)
      #expect(
        try rig.memory.bytes(at: 0x20000 + 0x1000 * UInt64(request), length: 512).allSatisfy {
          $0 == 200 + UInt8(request)
        })
    }
    let callerServed = slow?.readers.withLock { $0.contains(UInt(pthread_self())) } ?? false
    #expect(callerServed == servedOnCaller)
    if requests > 1 { #expect(slow?.running.withLock { $0.peak } == 2, "two workers: the requests overlapped") }
    rig.device.reset()
  }

  @Test("Config space reports capacity in sectors and the block size")
  func config() throws {
    let rig = try Rig()
    #expect(rig.device.readConfig(0, width: 8) == 2048)
    #expect(rig.device.readConfig(20, width: 4) == 512)
  }
}
