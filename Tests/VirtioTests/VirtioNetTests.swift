import Devices
import Glibc
import GuestMemory
import Network
import Synchronization
import Testing

@testable import Virtio

/// virtio-net through hand-written rings and a back end that records what it is given.
@Suite("virtio-net")
struct VirtioNetTests {
  /// A back end that keeps every frame sent and lets a test deliver frames.
  final class RecordingBackend: NetworkBackend, @unchecked Sendable {
    let description = "recording"
    let headerLength: Int
    let offloadFeatures: UInt64
    let sent = Mutex<[[UInt8]]>([])
    let negotiated = Mutex<UInt64?>(nil)
    var refuse = false
    /// Whether the host queue is attached, as the device last set it (nil: never set).
    let queueEnabled = Mutex<Bool?>(nil)
    func setQueueEnabled(_ enabled: Bool) { queueEnabled.withLock { $0 = enabled } }
    /// Bursts of sends the device said were finished.
    let bursts = Mutex(0)
    func finishSending() { bursts.withLock { $0 += 1 } }
    init(headerLength: Int = 0, offloads: UInt64 = 0) {
      self.headerLength = headerLength
      offloadFeatures = offloads
    }
    func setNegotiatedFeatures(_ features: UInt64) { negotiated.withLock { $0 = features } }
    func attach(deliver: @escaping @Sendable (UnsafeRawBufferPointer) -> Bool, wake: @escaping @Sendable () -> Void) {}
    func send(_ parts: UnsafeBufferPointer<iovec>) -> Bool {
      guard !refuse else { return false }
      var frame: [UInt8] = []
      for part in parts { frame += UnsafeRawBufferPointer(start: part.iov_base, count: part.iov_len) }
      sent.withLock { $0.append(frame) }
      return true
    }
    func preparePoll(_ descriptors: inout [pollfd]) -> Int32 { -1 }
    func service(_ descriptors: ArraySlice<pollfd>) {}
    func close() {}
  }

  static let mac = MACAddress("52:54:00:12:34:56")!

  /// Queue `index`'s rings (size 16): descriptors, available ring, used ring.
  static func rings(_ index: Int) -> (table: UInt64, available: UInt64, used: UInt64) {
    let base = 0x4000 * UInt64(index) + 0x1000
    return (base, base + 0x1000, base + 0x2000)
  }

  /// A device activated with `features`, its interrupts recorded.
  final class Interrupts: Sendable {
    let queues = Mutex<[Int]>([])
    func withLock<T>(_ body: (inout [Int]) -> T) -> T { queues.withLock { body(&$0) } }
  }

  static func device(_ backend: RecordingBackend, features: UInt64) throws -> (VirtioNet, GuestMemory, Interrupts) {
    let memory = try GuestMemory(ranges: [(0, 1 << 20)])
    let net = VirtioNet(backend: backend, macAddress: mac, memory: memory)
    let queues = (0..<3).map { index in
      let rings = Self.rings(index)
      return SplitVirtqueue(
        size: 16, descriptorTable: rings.table, availableRing: rings.available, usedRing: rings.used)
    }
    let interrupts = Interrupts()
    net.activate(queues: queues, features: features) { queue in interrupts.withLock { $0.append(queue) } }
    return (net, memory, interrupts)
  }

  /// The driver's side of one queue: posts chains of buffers.
  struct Driver {
    let memory: GuestMemory
    let queue: Int
    var nextDescriptor: UInt16 = 0
    var nextAvailable: UInt16 = 0

    /// Posts one chain of (address, length, writable) buffers; returns its head.
    @discardableResult
    mutating func post(_ buffers: [(UInt64, UInt32, Bool)]) throws -> UInt16 {
      let rings = VirtioNetTests.rings(queue)
      let head = nextDescriptor
      for (index, (address, length, writable)) in buffers.enumerated() {
        let slot = nextDescriptor % 16
        let descriptor = rings.table + 16 * UInt64(slot)
        let last = index == buffers.count - 1
        try memory.store(address, at: descriptor)
        try memory.store(length, at: descriptor + 8)
        try memory.store(UInt16((writable ? 2 : 0) | (last ? 0 : 1)), at: descriptor + 12)
        try memory.store((slot + 1) % 16, at: descriptor + 14)
        nextDescriptor &+= 1
      }
      try memory.store(head % 16, at: rings.available + 4 + 2 * UInt64(nextAvailable % 16))
      nextAvailable &+= 1
      try memory.store(nextAvailable, at: rings.available + 2)
      return head
    }

    /// The used ring's index and entry `slot` (head, length).
    func used(_ slot: UInt16) throws -> (index: UInt16, head: UInt32, length: UInt32) {
      let rings = VirtioNetTests.rings(queue)
      let element = rings.used + 4 + 8 * UInt64(slot % 16)
      return (
        try memory.load(UInt16.self, at: rings.used + 2), try memory.load(UInt32.self, at: element),
        try memory.load(UInt32.self, at: element + 4)
      )
    }
  }

  static func frame(to destination: [UInt8], length: Int, seed: UInt8) -> [UInt8] {
    var frame = destination + mac.bytes + [0x08, 0x00]
    while frame.count < length { frame.append(UInt8(truncatingIfNeeded: frame.count) &+ seed) }
    return frame
  }

  @Test(
    "A transmitted frame reaches the back end byte for byte, its virtio-net header dropped for a back end without one")
  func transmit() throws {
    let backend = RecordingBackend()
    let (net, memory, interrupts) = try Self.device(backend, features: VirtioNetFeature.mac)
    var driver = Driver(memory: memory, queue: 1)
    let frame = Self.frame(to: [0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF], length: 300, seed: 7)
    try memory.write([UInt8](repeating: 0, count: 12), to: 0x20000)
    try memory.write(Array(frame[0..<100]), to: 0x21000)
    try memory.write(Array(frame[100...]), to: 0x22000)
    // Header in a buffer of its own, then the frame in two pieces.
    try driver.post([(0x20000, 12, false), (0x21000, 100, false), (0x22000, 200, false)])
    // The header and the first bytes of the frame in one buffer.
    try memory.write([UInt8](repeating: 0, count: 12) + frame, to: 0x30000)
    try driver.post([(0x30000, UInt32(12 + frame.count), false)])
    #expect(net.notify(queue: 1))
    #expect(backend.sent.withLock { $0 } == [frame, frame])
    #expect(backend.bursts.withLock { $0 } == 1, "one burst of two frames")
    #expect(try driver.used(1).index == 2 && interrupts.withLock { $0 } == [1])
    #expect(net.statistics.transmitPackets.load(ordering: .relaxed) == 2)
    #expect(net.statistics.transmitBytes.load(ordering: .relaxed) == 600)
  }

  @Test(
    "A back end with a header gets it too; a runt, an oversized frame and a refused one count as dropped, never as sent"
  )
  func transmitHeaderAndDrops() throws {
    let backend = RecordingBackend(headerLength: 12, offloads: VirtioNetFeature.tapOffloads)
    let (net, memory, _) = try Self.device(backend, features: VirtioNetFeature.checksum)
    #expect(backend.negotiated.withLock { $0 } == VirtioNetFeature.checksum, "the back end hears what was negotiated")
    #expect(net.deviceFeatures & VirtioNetFeature.tapOffloads == VirtioNetFeature.tapOffloads)
    var driver = Driver(memory: memory, queue: 1)
    let header: [UInt8] = [1, 0, 0, 0, 0, 0, 34, 0, 16, 0, 0, 0]  // NEEDS_CSUM, start 34, offset 16
    let frame = Self.frame(to: Self.mac.bytes, length: 64, seed: 1)
    try memory.write(header + frame, to: 0x20000)
    try driver.post([(0x20000, 76, false)])
    try driver.post([(0x20000, 20, false)])  // a runt: shorter than header + Ethernet header
    try driver.post([(0x20000, 70_000, false)])  // longer than any frame
    #expect(net.notify(queue: 1))
    #expect(backend.sent.withLock { $0 } == [header + frame])
    backend.refuse = true
    try driver.post([(0x20000, 76, false)])
    #expect(net.notify(queue: 1))
    #expect(try driver.used(3).index == 4, "every chain goes back to the driver")
    #expect(net.statistics.transmitPackets.load(ordering: .relaxed) == 1)
    #expect(net.statistics.transmitDropped.load(ordering: .relaxed) == 3)
  }

  @Test(
    "Received frames fill posted buffers with a header and num_buffers; with none posted the device asks to hold the frame"
  )
  func receive() throws {
    let backend = RecordingBackend()
    let (net, memory, interrupts) = try Self.device(backend, features: VirtioNetFeature.mergeableReceiveBuffers)
    let frame = Self.frame(to: Self.mac.bytes, length: 1100, seed: 3)
    #expect(!frame.withUnsafeBytes { net.receive($0) }, "no buffer posted: hold the frame")
    var driver = Driver(memory: memory, queue: 0)
    // Mergeable buffers of 512 bytes: header + 1100 bytes need three.
    for index in 0..<3 { try driver.post([(0x40000 + 0x1000 * UInt64(index), 512, true)]) }
    #expect(frame.withUnsafeBytes { net.receive($0) })
    var received: [UInt8] = []
    for slot in 0..<3 {
      let used = try driver.used(UInt16(slot))
      #expect(used.index == 3)
      received += try memory.bytes(at: 0x40000 + 0x1000 * UInt64(slot), length: Int(used.length))
    }
    #expect(Array(received[0..<10]) == [UInt8](repeating: 0, count: 10))
    #expect(received[10] == 3 && received[11] == 0, "num_buffers is 3")
    #expect(Array(received[12...]) == frame)
    #expect(interrupts.withLock { $0 } == [0])
    // Two buffers are not enough for the next frame: they are left for later, untouched.
    for index in 0..<2 { try driver.post([(0x50000 + 0x1000 * UInt64(index), 512, true)]) }
    #expect(!frame.withUnsafeBytes { net.receive($0) })
    #expect(try driver.used(0).index == 3)
    try driver.post([(0x52000, 512, true)])
    #expect(frame.withUnsafeBytes { net.receive($0) })
    #expect(try driver.used(0).index == 6)
    #expect(net.statistics.receivePackets.load(ordering: .relaxed) == 2)
  }

  @Test(
    "A burst of batched frames gets one interrupt, when the batch ends; a transmit drain asks for no kicks until it is done"
  )
  func batches() throws {
    let backend = RecordingBackend()
    let (net, memory, interrupts) = try Self.device(backend, features: VirtioNetFeature.mergeableReceiveBuffers)
    var driver = Driver(memory: memory, queue: 0)
    for index in 0..<3 { try driver.post([(0x40000 + 0x1000 * UInt64(index), 2048, true)]) }
    let frame = Self.frame(to: Self.mac.bytes, length: 100, seed: 1)
    for _ in 0..<3 { #expect(frame.withUnsafeBytes { net.receive($0, batched: true) }) }
    #expect(interrupts.withLock { $0 }.isEmpty, "nothing until the batch ends")
    net.finishReceiveBatch()
    net.finishReceiveBatch()
    #expect(interrupts.withLock { $0 } == [0], "one interrupt for three frames")
    // Without EVENT_IDX the drain sets VRING_USED_F_NO_NOTIFY and clears it when done.
    var transmit = Driver(memory: memory, queue: 1)
    try memory.write([UInt8](repeating: 0, count: 12) + frame, to: 0x20000)
    try transmit.post([(0x20000, 112, false)])
    #expect(net.notify(queue: 1))
    #expect(try memory.load(UInt16.self, at: Self.rings(1).used) == 0, "kicks wanted again")
    #expect(backend.sent.withLock { $0.count } == 1)
  }

  @Test("Without mergeable buffers a frame needs one chain big enough; a smaller chain is kept and the frame dropped")
  func receiveWithoutMergeable() throws {
    let backend = RecordingBackend()
    let (net, memory, _) = try Self.device(backend, features: 0)
    var driver = Driver(memory: memory, queue: 0)
    try driver.post([(0x40000, 100, true)])
    let frame = Self.frame(to: Self.mac.bytes, length: 1000, seed: 3)
    #expect(frame.withUnsafeBytes { net.receive($0) }, "dropped, not held: no chain will ever fit it")
    #expect(net.statistics.receiveDropped.load(ordering: .relaxed) == 1)
    let small = Self.frame(to: Self.mac.bytes, length: 60, seed: 3)
    #expect(small.withUnsafeBytes { net.receive($0) })
    let used = try driver.used(0)
    #expect(used.index == 1 && used.length == 72)
    #expect(try memory.bytes(at: 0x40000 + 10, length: 2) == [1, 0], "num_buffers is 1")
  }

  @Test("The control queue sets receive modes and the MAC table; the filter then keeps other hosts' frames out")
  func receiveFilter() throws {
    let backend = RecordingBackend()
    let (net, memory, _) = try Self.device(backend, features: VirtioNetFeature.controlQueue)
    var control = Driver(memory: memory, queue: 2)
    func command(_ bytes: [UInt8], at address: UInt64) throws -> UInt8 {
      try memory.write(bytes, to: address)
      try memory.store(UInt8(0xAA), at: address + 0x800)
      try control.post([(address, UInt32(bytes.count), false), (address + 0x800, 1, true)])
      #expect(net.notify(queue: 2))
      return try memory.load(UInt8.self, at: address + 0x800)
    }
    #expect(net.receiveFilter.promiscuous, "promiscuous after reset, as QEMU's")
    #expect(try command([0, 0, 0], at: 0x60000) == 0, "promiscuous off: OK")
    let multicast: [UInt8] = [0x33, 0x33, 0, 0, 0, 1]
    #expect(try command([1, 0, 0, 0, 0, 0, 1, 0, 0, 0] + multicast, at: 0x61000) == 0, "table: 0 unicast, 1 multicast")
    #expect(try command([1, 0, 5, 0, 0, 0], at: 0x62000) == 1, "a table with a count past its data: ERR")
    #expect(try command([9, 9], at: 0x63000) == 1, "an unknown class: ERR")
    #expect(net.receiveFilter.multicastTable == [multicast])
    var receive = Driver(memory: memory, queue: 0)
    for index in 0..<4 { try receive.post([(0x40000 + 0x1000 * UInt64(index), 2048, true)]) }
    let frames = [
      Self.frame(to: Self.mac.bytes, length: 60, seed: 0),
      Self.frame(to: [0x52, 0x54, 0, 1, 1, 1], length: 60, seed: 0),
      Self.frame(to: multicast, length: 60, seed: 0), Self.frame(to: [0x01, 0, 0x5E, 0, 0, 9], length: 60, seed: 0),
      Self.frame(to: [0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF], length: 60, seed: 0),
    ]
    for frame in frames { #expect(frame.withUnsafeBytes { net.receive($0) }) }
    #expect(try receive.used(0).index == 3, "own address, the listed multicast group and broadcast pass")
    #expect(net.statistics.receiveFiltered.load(ordering: .relaxed) == 2)
  }

  @Test(
    "A hostile receive chain (outside guest memory) breaks the queue: reported, the frame dropped, the device served no more until reset"
  )
  func hostileReceiveChain() throws {
    let backend = RecordingBackend()
    let (net, memory, _) = try Self.device(backend, features: 0)
    let broken = Mutex(false)
    net.queueBroken = { broken.withLock { $0 = true } }
    var driver = Driver(memory: memory, queue: 0)
    try driver.post([(0xFFFF_0000, 2048, true)])
    let frame = Self.frame(to: Self.mac.bytes, length: 60, seed: 0)
    #expect(frame.withUnsafeBytes { net.receive($0) })
    #expect(broken.withLock { $0 })
    #expect(frame.withUnsafeBytes { net.receive($0) }, "dropped while broken, never held for ever")
    // A hostile transmit chain: the kick reports it (the transport sets NEEDS_RESET).
    var transmit = Driver(memory: memory, queue: 1)
    try transmit.post([(0xFFFF_0000, 64, false)])
    #expect(!net.notify(queue: 1))
  }

  @Test(
    "After a restore the device asks the driver to announce itself until it acknowledges; an MTU is offered when given")
  func announceAndMTU() throws {
    let memory = try GuestMemory(ranges: [(0, 1 << 20)])
    let net = VirtioNet(backend: RecordingBackend(), macAddress: Self.mac, memory: memory, mtu: 9000)
    #expect(net.deviceFeatures & VirtioNetFeature.mtu != 0 && net.readConfig(10, width: 2) == 9000)
    let changes = Mutex(0)
    net.configurationChanged = { changes.withLock { $0 += 1 } }
    let queues = (0..<3).map { index in
      let rings = Self.rings(index)
      return SplitVirtqueue(
        size: 16, descriptorTable: rings.table, availableRing: rings.available, usedRing: rings.used)
    }
    net.activate(queues: queues, features: VirtioNetFeature.controlQueue)
    net.restored()
    #expect(!net.isAnnouncing && changes.withLock { $0 } == 0, "a driver that did not offer to announce is not asked")
    net.activate(queues: queues, features: VirtioNetFeature.controlQueue | VirtioNetFeature.guestAnnounce)
    net.restored()
    #expect(net.readConfig(6, width: 2) == 3 && changes.withLock { $0 } == 1, "link up and announce")
    var control = Driver(memory: memory, queue: 2)
    try memory.write([3, 0], to: 0x60000)
    try control.post([(0x60000, 2, false), (0x60800, 1, true)])
    #expect(net.notify(queue: 2))
    #expect(try memory.load(UInt8.self, at: 0x60800) == 0 && net.readConfig(6, width: 2) == 1, "acknowledged")
    #expect(
      VirtioNet(backend: RecordingBackend(), macAddress: Self.mac, memory: memory).deviceFeatures
        & VirtioNetFeature.mtu == 0)
  }

  @Test("Link down: the driver sees it in status and a configuration interrupt; frames are dropped both ways")
  func linkDown() throws {
    let backend = RecordingBackend()
    let (net, memory, _) = try Self.device(backend, features: 0)
    let changes = Mutex(0)
    net.configurationChanged = { changes.withLock { $0 += 1 } }
    #expect(net.readConfig(6, width: 2) == 1)
    #expect(net.readConfig(0, width: 4) == 0x1200_5452 && net.readConfig(4, width: 2) == 0x5634)
    net.setLink(up: false)
    net.setLink(up: false)
    #expect(net.readConfig(6, width: 2) == 0 && changes.withLock { $0 } == 1)
    var driver = Driver(memory: memory, queue: 1)
    try memory.write(
      [UInt8](repeating: 0, count: 12) + Self.frame(to: Self.mac.bytes, length: 60, seed: 0), to: 0x20000)
    try driver.post([(0x20000, 72, false)])
    #expect(net.notify(queue: 1))
    #expect(backend.sent.withLock { $0 }.isEmpty && net.statistics.transmitDropped.load(ordering: .relaxed) == 1)
    net.setLink(up: true)
    #expect(changes.withLock { $0 } == 2)
  }
  @Test(
    "Multiqueue: max_virtqueue_pairs in the configuration; only the first pair receives until VQ_PAIRS_SET; each pair sends through its own back end; without MQ queue 2 is the control queue"
  )
  func multiqueue() throws {
    let memory = try GuestMemory(ranges: [(0, 1 << 20)])
    let backends = [RecordingBackend(), RecordingBackend()]
    let net = VirtioNet(backend: backends[0], additional: [backends[1]], macAddress: Self.mac, memory: memory)
    #expect(net.deviceFeatures & VirtioNetFeature.multiqueue != 0)
    #expect(net.queueSizes.count == 5)
    #expect(net.readConfig(8, width: 2) == 2, "max_virtqueue_pairs")
    #expect(net.readConfig(10, width: 2) == 1500, "mtu stays after it")
    let queues = (0..<5).map { index in
      let rings = Self.rings(index)
      return SplitVirtqueue(
        size: 16, descriptorTable: rings.table, availableRing: rings.available, usedRing: rings.used)
    }
    let interrupts = Interrupts()
    net.activate(queues: queues, features: VirtioNetFeature.multiqueue | VirtioNetFeature.controlQueue) { queue in
      interrupts.withLock { $0.append(queue) }
    }
    #expect(backends.map { $0.queueEnabled.withLock { $0 } } == [true, false], "only pair 0 until the driver says")
    var control = Driver(memory: memory, queue: 4)
    func pairs(_ count: UInt16, at address: UInt64) throws -> UInt8 {
      try memory.write([4, 0, UInt8(count & 0xFF), UInt8(count >> 8)], to: address)
      try control.post([(address, 4, false), (address + 0x800, 1, true)])
      #expect(net.notify(queue: 4))
      return try memory.load(UInt8.self, at: address + 0x800)
    }
    #expect(try pairs(3, at: 0x60000) == 1, "more pairs than the device has: ERR")
    #expect(try pairs(0, at: 0x61000) == 1, "no pair: ERR")
    #expect(try pairs(2, at: 0x62000) == 0)
    #expect(net.activeQueuePairs == 2)
    #expect(backends.map { $0.queueEnabled.withLock { $0 } } == [true, true])
    // A frame sent on the second pair's transmit queue (3) goes to the second back end.
    var transmit = Driver(memory: memory, queue: 3)
    let frame = Self.frame(to: Self.mac.bytes, length: 80, seed: 3)
    try memory.write([UInt8](repeating: 0, count: 12) + frame, to: 0x70000)
    try transmit.post([(0x70000, UInt32(12 + frame.count), false)])
    #expect(net.notify(queue: 3))
    #expect(backends[1].sent.withLock { $0 } == [frame] && backends[0].sent.withLock { $0 }.isEmpty)
    // A frame from the second back end lands in receive queue 2, whose interrupt is raised.
    var receive = Driver(memory: memory, queue: 2)
    try receive.post([(0x78000, 2048, true)])
    #expect(frame.withUnsafeBytes { net.receive($0, pair: 1) })
    #expect(try receive.used(0).index == 1 && interrupts.withLock { $0 }.contains(2))
    // The state a snapshot keeps comes back into a fresh device; a hostile one is refused.
    let saved = try #require(net.deviceState)
    let fresh = VirtioNet(
      backend: RecordingBackend(), additional: [RecordingBackend()], macAddress: Self.mac, memory: memory)
    try fresh.restore(deviceState: saved)
    #expect(fresh.activeQueuePairs == 2 && fresh.deviceState == saved)
    guard case .net(var hostile) = saved else { throw Failure("not a NIC's state") }
    hostile.activePairs = 9
    #expect(throws: DeviceStateError.self) { try fresh.restore(deviceState: .net(hostile)) }
    hostile.activePairs = 1
    hostile.filter.address = [1, 2, 3]
    #expect(throws: DeviceStateError.self) { try fresh.restore(deviceState: .net(hostile)) }
    #expect(fresh.activeQueuePairs == 2, "a refused state changes nothing")
    // After a reset, a driver without MQ finds the control queue at index 2.
    net.reset()
    #expect(net.activeQueuePairs == 1)
    net.activate(queues: Array(queues[0..<3]), features: VirtioNetFeature.controlQueue)
    control = Driver(memory: memory, queue: 2)
    try memory.write([0, 0, 0], to: 0x64000)
    try control.post([(0x64000, 3, false), (0x64800, 1, true)])
    #expect(net.notify(queue: 2))
    #expect(try memory.load(UInt8.self, at: 0x64800) == 0 && !net.receiveFilter.promiscuous)
  }

  struct Failure: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
  }
}

/// MAC addresses and port forwards as users write them.
@Suite("Network options")
struct NetworkOptionTests {
  @Test("MAC addresses parse, print and classify; generated ones are stable, locally administered and unicast")
  func macAddresses() {
    #expect(MACAddress("52:54:00:AB:cd:0f")?.description == "52:54:00:ab:cd:0f")
    #expect(MACAddress("52-54-00-ab-cd-0f") != nil)
    for bad in ["52:54:00:ab:cd", "52:54:00:ab:cd:0g", "5:54:00:ab:cd:0f0", "", "52:54:00:ab:cd:0f:11"] {
      #expect(MACAddress(bad) == nil, "\(bad)")
    }
    #expect(MACAddress("01:00:5e:00:00:01")!.isMulticast && MACAddress("ff:ff:ff:ff:ff:ff")!.isBroadcast)
    let first = MACAddress.generated(name: "web", index: 0)
    #expect(first == MACAddress.generated(name: "web", index: 0))
    #expect(first != MACAddress.generated(name: "web", index: 1) && first != MACAddress.generated(name: "db", index: 0))
    #expect(first.isLocallyAdministered && !first.isMulticast)
  }

  @Test("hostfwd as QEMU writes it, with loopback and the DHCP address as defaults; bad parts are named")
  func portForwards() throws {
    let forward = try PortForward(parsing: "tcp::8080-:80")
    #expect(forward.description == "tcp:127.0.0.1:8080-10.0.2.15:80")
    #expect(try PortForward(parsing: "udp:0.0.0.0:5353-10.0.2.16:53").transport == .udp)
    #expect(try PortForward(parsing: ":2222-:22").hostPort == 2222)
    for (bad, says) in [
      ("tcp::8080", "expected"), ("sctp::1-:2", "not tcp or udp"), ("tcp:example:1-:2", "not an IPv4"),
      ("tcp::0-:2", "host port"), ("tcp::1-:99999", "guest port"),
    ] {
      #expect(throws: NetworkError.self) { try PortForward(parsing: bad) }
      do { _ = try PortForward(parsing: bad) } catch { #expect(error.description.contains(says), "\(error)") }
    }
  }

}
