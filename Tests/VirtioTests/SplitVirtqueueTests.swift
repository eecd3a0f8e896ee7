import GuestMemory
import Testing

@testable import Virtio

/// The split virtqueue against hand-written rings: well-formed chains come out whole;
/// every kind of hostile chain is refused with its reason, and the queue keeps going.
@Suite("Split virtqueues")
struct SplitVirtqueueTests {
  static let size: UInt16 = 8
  static let table: UInt64 = 0x1000
  static let available: UInt64 = 0x2000
  static let used: UInt64 = 0x3000

  struct Driver {
    let memory: GuestMemory
    var availableIndex: UInt16 = 0

    func descriptor(_ index: UInt16, address: UInt64, length: UInt32, flags: UInt16, next: UInt16 = 0) throws {
      let base = SplitVirtqueueTests.table + 16 * UInt64(index)
      try memory.store(address, at: base)
      try memory.store(length, at: base + 8)
      try memory.store(flags, at: base + 12)
      try memory.store(next, at: base + 14)
    }

    mutating func offer(_ head: UInt16) throws {
      let slot = SplitVirtqueueTests.available + 4 + 2 * UInt64(availableIndex % SplitVirtqueueTests.size)
      try memory.store(head, at: slot)
      availableIndex &+= 1
      try memory.store(availableIndex, at: SplitVirtqueueTests.available + 2)
    }
  }

  static func make() throws -> (SplitVirtqueue, Driver) {
    let memory = try GuestMemory(ranges: [(0, 1 << 20)])
    let queue = SplitVirtqueue(
      size: size, descriptorTable: table, availableRing: available, usedRing: used, eventIndex: true,
      indirectDescriptors: true)
    try queue.validate(in: memory)
    return (queue, Driver(memory: memory))
  }

  @Test("A request with readable then writable buffers comes out whole, and completes into the used ring")
  func wellFormed() throws {
    var (queue, driver) = try Self.make()
    #expect(try queue.next(in: driver.memory) == nil)
    try driver.descriptor(0, address: 0x10000, length: 16, flags: SplitVirtqueue.Flag.next, next: 3)
    try driver.descriptor(
      3, address: 0x11000, length: 512, flags: SplitVirtqueue.Flag.next | SplitVirtqueue.Flag.write, next: 5)
    try driver.descriptor(5, address: 0x12000, length: 1, flags: SplitVirtqueue.Flag.write)
    try driver.offer(0)
    let chain = try #require(try queue.next(in: driver.memory))
    #expect(chain.head == 0 && chain.readableLength == 16 && chain.writableLength == 513 && chain.buffers.count == 3)
    try queue.complete(chain.head, written: 513, in: driver.memory)
    #expect(try driver.memory.load(UInt16.self, at: Self.used + 2) == 1)
    #expect(try driver.memory.load(UInt32.self, at: Self.used + 4) == 0)
    #expect(try driver.memory.load(UInt32.self, at: Self.used + 8) == 513)
    #expect(try driver.memory.load(UInt16.self, at: Self.used + 4 + 8 * UInt64(Self.size)) == 1, "avail_event")
    #expect(try queue.next(in: driver.memory) == nil)
  }

  @Test("An indirect table is followed one level deep")
  func indirect() throws {
    var (queue, driver) = try Self.make()
    let indirect: UInt64 = 0x20000
    for (index, (flags, length)) in [(SplitVirtqueue.Flag.next, UInt32(16)), (SplitVirtqueue.Flag.write, 4096)]
      .enumerated()
    {
      try driver.memory.store(UInt64(0x30000 + index * 0x1000), at: indirect + 16 * UInt64(index))
      try driver.memory.store(length, at: indirect + 16 * UInt64(index) + 8)
      try driver.memory.store(flags, at: indirect + 16 * UInt64(index) + 12)
      try driver.memory.store(UInt16(index + 1), at: indirect + 16 * UInt64(index) + 14)
    }
    try driver.descriptor(2, address: indirect, length: 32, flags: SplitVirtqueue.Flag.indirect)
    try driver.offer(2)
    let chain = try #require(try queue.next(in: driver.memory))
    #expect(chain.head == 2 && chain.readableLength == 16 && chain.writableLength == 4096)
  }

  @Test("Hostile chains are refused with their reason; the next well-formed request still works")
  func hostile() throws {
    let cases: [(String, (Driver) throws -> Void, VirtqueueError)] = [
      (
        "loop", { try $0.descriptor(0, address: 0x10000, length: 8, flags: SplitVirtqueue.Flag.next, next: 0) },
        .chainTooLong(limit: 8)
      ),
      (
        "index out of range",
        { try $0.descriptor(0, address: 0x10000, length: 8, flags: SplitVirtqueue.Flag.next, next: 9) },
        .descriptorIndexOutOfRange(index: 9, queueSize: 8)
      ),
      (
        "buffer past RAM", { try $0.descriptor(0, address: (1 << 20) - 4, length: 8, flags: 0) },
        .bufferOutsideMemory(address: (1 << 20) - 4, length: 8)
      ),
      (
        "buffer at 2^64 - 1", { try $0.descriptor(0, address: .max, length: 2, flags: 0) },
        .bufferOutsideMemory(address: .max, length: 2)
      ),
      (
        "readable after writable",
        {
          try $0.descriptor(
            0, address: 0x10000, length: 8, flags: SplitVirtqueue.Flag.write | SplitVirtqueue.Flag.next, next: 1)
          try $0.descriptor(1, address: 0x11000, length: 8, flags: 0)
        }, .readableAfterWritable(index: 1)
      ),
      (
        "indirect with NEXT",
        {
          try $0.descriptor(
            0, address: 0x20000, length: 16, flags: SplitVirtqueue.Flag.indirect | SplitVirtqueue.Flag.next)
        },
        .nestedIndirect
      ),
      (
        "indirect table of 15 bytes",
        { try $0.descriptor(0, address: 0x20000, length: 15, flags: SplitVirtqueue.Flag.indirect) },
        .invalidIndirectTable(length: 15)
      ),
      (
        "indirect inside indirect",
        {
          try $0.memory.store(UInt64(0x20000), at: 0x20000)
          try $0.memory.store(UInt32(16), at: 0x20008)
          try $0.memory.store(SplitVirtqueue.Flag.indirect, at: 0x2000C)
          try $0.descriptor(0, address: 0x20000, length: 16, flags: SplitVirtqueue.Flag.indirect)
        }, .nestedIndirect
      ),
    ]
    for (name, build, expected) in cases {
      var (queue, driver) = try Self.make()
      try build(driver)
      try driver.offer(0)
      #expect(throws: expected, "\(name)") { _ = try queue.next(in: driver.memory) }
      try driver.descriptor(4, address: 0x10000, length: 8, flags: 0)
      try driver.offer(4)
      #expect(try queue.next(in: driver.memory)?.head == 4, "\(name): the queue carries on")
    }
  }

  @Test("An available index that jumps past the queue size is refused")
  func availableJump() throws {
    var (queue, driver) = try Self.make()
    try driver.memory.store(UInt16(9), at: Self.available + 2)
    #expect(throws: VirtqueueError.availableIndexJump(from: 0, to: 9)) { _ = try queue.next(in: driver.memory) }
  }

  @Test("Rings outside guest memory are refused when the queue is enabled")
  func ringsOutside() throws {
    let memory = try GuestMemory(ranges: [(0, 1 << 20)])
    let queue = SplitVirtqueue(size: 256, descriptorTable: (1 << 20) - 16, availableRing: 0, usedRing: 0x1000)
    #expect(throws: VirtqueueError.ringOutsideMemory(address: (1 << 20) - 16)) { try queue.validate(in: memory) }
  }

  @Test("EVENT_IDX: notify only when used_event falls in the newly used range; NO_INTERRUPT without it")
  func notifications() throws {
    var (queue, driver) = try Self.make()
    try driver.descriptor(0, address: 0x10000, length: 8, flags: 0)
    try driver.memory.store(UInt16(1), at: Self.available + 4 + 2 * UInt64(Self.size))  // used_event = 1
    for _ in 0..<3 {
      try driver.offer(0)
      _ = try queue.next(in: driver.memory)
    }
    try queue.complete(0, written: 0, in: driver.memory)  // used 0 -> 1
    #expect(try !queue.shouldNotify(in: driver.memory), "used_event 1 not yet passed")
    try queue.complete(0, written: 0, in: driver.memory)  // used 1 -> 2
    #expect(try queue.shouldNotify(in: driver.memory), "used_event 1 just passed")
    try queue.complete(0, written: 0, in: driver.memory)
    #expect(try !queue.shouldNotify(in: driver.memory))
    queue.eventIndex = false
    try driver.memory.store(UInt16(1), at: Self.available)  // VIRTQ_AVAIL_F_NO_INTERRUPT
    #expect(try !queue.shouldNotify(in: driver.memory))
    try driver.memory.store(UInt16(0), at: Self.available)
    #expect(try queue.shouldNotify(in: driver.memory))
  }
}
