import Devices
import GuestMemory
import Synchronization
import Testing

@testable import Virtio

/// virtio-console through hand-written rings: output to the host, host input into posted buffers.
@Suite("virtio-console")
struct VirtioConsoleTests {
  final class Captured: ConsoleOutput {
    let bytes = Mutex<[UInt8]>([])
    func write(_ buffer: UnsafeRawBufferPointer) { bytes.withLock { $0 += buffer } }
  }

  /// Queue `index` at 0x1000 * (4 * index + 1): descriptors, available ring, used ring.
  static func rings(_ index: UInt64) -> (table: UInt64, available: UInt64, used: UInt64) {
    let base = 0x4000 * index + 0x1000
    return (base, base + 0x1000, base + 0x2000)
  }

  static func offer(_ memory: GuestMemory, queue: UInt64, slot: UInt16, address: UInt64, length: UInt32, writable: Bool)
    throws
  {
    let rings = Self.rings(queue)
    let descriptor = rings.table + 16 * UInt64(slot)
    try memory.store(address, at: descriptor)
    try memory.store(length, at: descriptor + 8)
    try memory.store(UInt16(writable ? 2 : 0), at: descriptor + 12)
    try memory.store(slot, at: rings.available + 4 + 2 * UInt64(slot))
    try memory.store(slot + 1, at: rings.available + 2)
  }

  @Test("What the driver transmits reaches the output; input fills receive buffers, never more than posted")
  func transmitAndReceive() throws {
    let memory = try GuestMemory(ranges: [(0, 1 << 20)])
    let output = Captured()
    let console = VirtioConsole(memory: memory, output: output)
    let interrupts = Mutex<[Int]>([])
    #expect(console.receive([1, 2, 3]) == 0, "no queues yet: nothing taken")
    let queues = (0..<2).map { index in
      let rings = Self.rings(UInt64(index))
      return SplitVirtqueue(
        size: 8, descriptorTable: rings.table, availableRing: rings.available, usedRing: rings.used)
    }
    console.activate(queues: queues, features: 0) { queue in interrupts.withLock { $0.append(queue) } }

    try memory.write(Array("hello from hvc0\n".utf8), to: 0x20000)
    try Self.offer(memory, queue: 1, slot: 0, address: 0x20000, length: 16, writable: false)
    #expect(console.notify(queue: 1))
    #expect(output.bytes.withLock { $0 } == Array("hello from hvc0\n".utf8))

    #expect(console.receive(Array("ls\n".utf8)[...]) == 0, "no receive buffer posted yet")
    try Self.offer(memory, queue: 0, slot: 0, address: 0x30000, length: 2, writable: true)
    #expect(console.receive(Array("ls\n".utf8)[...]) == 2, "one 2-byte buffer takes two bytes")
    #expect(try memory.bytes(at: 0x30000, length: 2) == Array("ls".utf8))
    #expect(try memory.load(UInt32.self, at: Self.rings(0).used + 8) == 2, "used length is what was written")
    #expect(interrupts.withLock { $0 } == [1, 0])
    #expect(
      console.bytesTransmitted.load(ordering: .relaxed) == 16 && console.bytesReceived.load(ordering: .relaxed) == 2)
  }

  @Test(
    "A good receive buffer then one outside memory in the same delivery: the good one is filled, the queue reported broken (found by the fuzzer)"
  )
  func brokenAfterInput() throws {
    let memory = try GuestMemory(ranges: [(0, 1 << 20)])
    let console = VirtioConsole(memory: memory, output: Captured())
    let broken = Mutex(false)
    console.queueBroken = { broken.withLock { $0 = true } }
    let rings = Self.rings(0)
    let queue = SplitVirtqueue(
      size: 8, descriptorTable: rings.table, availableRing: rings.available, usedRing: rings.used)
    console.activate(queues: [queue, queue], features: 0)
    try Self.offer(memory, queue: 0, slot: 0, address: 0x30000, length: 2, writable: true)
    try Self.offer(memory, queue: 0, slot: 1, address: 0xFFFF_0000, length: 64, writable: true)
    #expect(console.receive(Array("hello".utf8)[...]) == 2)
    #expect(try memory.bytes(at: 0x30000, length: 2) == Array("he".utf8))
    #expect(broken.withLock { $0 })
  }
}
