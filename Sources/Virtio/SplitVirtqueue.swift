import GuestMemory
import Synchronization

/// A split virtqueue (virtio 1.2 §2.7) as the device sees it: the driver's descriptor
/// table, available ring and used ring in guest memory.
///
/// No device knowledge lives here. Every index and address the driver wrote is untrusted:
/// chains are walked with a hard length limit, every buffer is checked against guest
/// memory, readable buffers must precede writable ones, indirect tables are one level
/// deep — a violation is a `VirtqueueError`, never a trap or an access outside the guest.
public struct SplitVirtqueue: Sendable {
  /// Descriptor flags.
  public enum Flag {
    public static let next: UInt16 = 1
    public static let write: UInt16 = 2
    public static let indirect: UInt16 = 4
  }

  public let size: UInt16
  public let descriptorTable: UInt64
  public let availableRing: UInt64
  public let usedRing: UInt64
  /// VIRTIO_F_RING_EVENT_IDX negotiated.
  public var eventIndex: Bool
  /// VIRTIO_F_INDIRECT_DESC negotiated.
  public var indirectDescriptors: Bool
  /// The next available-ring slot the device will read.
  public private(set) var nextAvailable: UInt16 = 0
  /// The next used-ring slot the device will write.
  public private(set) var nextUsed: UInt16 = 0
  /// The used index at the last notification decision (for EVENT_IDX).
  private var signalledUsed: UInt16 = 0

  /// Where the device is in the rings: what a snapshot saves of a live queue (its
  /// addresses and size come from the transport's configuration).
  public struct Position: Sendable, Equatable, Codable {
    public var nextAvailable: UInt16
    public var nextUsed: UInt16
    public var signalledUsed: UInt16

    public init(nextAvailable: UInt16, nextUsed: UInt16, signalledUsed: UInt16) {
      self.nextAvailable = nextAvailable
      self.nextUsed = nextUsed
      self.signalledUsed = signalledUsed
    }
  }

  /// The device's position in the rings now.
  public var position: Position {
    Position(nextAvailable: nextAvailable, nextUsed: nextUsed, signalledUsed: signalledUsed)
  }

  /// Continues from a saved position (any values: the next `next` checks them against the ring).
  public mutating func restore(_ position: Position) {
    nextAvailable = position.nextAvailable
    nextUsed = position.nextUsed
    signalledUsed = position.signalledUsed
  }

  /// The largest indirect table accepted, in descriptors.
  public static let maximumIndirectDescriptors = 1024

  /// A queue of `size` entries (a power of two up to 32768) at the given guest addresses.
  public init(
    size: UInt16, descriptorTable: UInt64, availableRing: UInt64, usedRing: UInt64, eventIndex: Bool = false,
    indirectDescriptors: Bool = false
  ) {
    self.size = size
    self.descriptorTable = descriptorTable
    self.availableRing = availableRing
    self.usedRing = usedRing
    self.eventIndex = eventIndex
    self.indirectDescriptors = indirectDescriptors
  }

  /// A queue the driver did not enable, in its place among the enabled ones (devices see their
  /// queues by index: virtio-scsi's request queue is 2 even when the driver, as SeaBIOS does,
  /// enables no other). It never has a request, and a kick on it does nothing.
  public static let disabled = SplitVirtqueue(size: 0, descriptorTable: 0, availableRing: 0, usedRing: 0)

  /// Whether the driver enabled it (see `disabled`).
  public var isEnabled: Bool { size != 0 }

  /// Checks that the three rings lie inside guest memory (do this when the driver enables the queue).
  public func validate(in memory: GuestMemory) throws(VirtqueueError) {
    let queue = UInt64(size)
    for (address, length) in [
      (descriptorTable, 16 * queue), (availableRing, 6 + 2 * queue), (usedRing, 6 + 8 * queue),
    ] where memory.region(containing: address, length: length) == nil {
      throw .ringOutsideMemory(address: address)
    }
  }

  /// The next request, or nil when the driver has made none since the last call.
  /// `requestingKick: false` leaves `avail_event` where it was: a device draining the queue
  /// asks for no kicks meanwhile (then calls `requestKick` and looks again).
  public mutating func next(in memory: GuestMemory, requestingKick: Bool = true) throws(VirtqueueError)
    -> DescriptorChain?
  {
    var chain = DescriptorChain(head: 0, buffers: [])
    return try next(into: &chain, in: memory, requestingKick: requestingKick) ? chain : nil
  }

  /// As `next`, into `chain`, whose buffer list keeps its storage from request to request (no
  /// allocation on a device's hot path); false when the driver has made no request.
  public mutating func next(into chain: inout DescriptorChain, in memory: GuestMemory, requestingKick: Bool = true)
    throws(VirtqueueError) -> Bool
  {
    guard isEnabled else { return false }
    let available = try load(UInt16.self, at: availableRing + 2, memory)
    guard available != nextAvailable else { return false }
    // The ring entry and descriptors only after the index that published them.
    atomicMemoryFence(ordering: .acquiring)
    guard available &- nextAvailable <= size else {
      throw .availableIndexJump(from: nextAvailable, to: available)
    }
    let slot = availableRing + 4 + 2 * UInt64(nextAvailable % size)
    let head = try load(UInt16.self, at: slot, memory)
    nextAvailable &+= 1
    if eventIndex && requestingKick {
      // avail_event: tell the driver which index to notify at next.
      try store(nextAvailable, at: usedRing + 4 + 8 * UInt64(size), memory)
    }
    try walk(from: head, into: &chain, in: memory)
    return true
  }

  /// Asks the driver to kick for the next request (`avail_event`, or clearing
  /// VRING_USED_F_NO_NOTIFY), or tells it not to bother while the device is busy with the
  /// queue anyway. After asking, look at the ring again: a request may have come meanwhile.
  public func requestKick(_ wanted: Bool, in memory: GuestMemory) throws(VirtqueueError) {
    guard isEnabled else { return }
    if eventIndex {
      if wanted { try store(nextAvailable, at: usedRing + 4 + 8 * UInt64(size), memory) }
    } else {
      try store(UInt16(wanted ? 0 : 1), at: usedRing, memory)
    }
    // The request for a kick before the next look at the available index.
    atomicMemoryFence(ordering: .sequentiallyConsistent)
  }

  /// Whether the driver has made a request the device has not taken.
  public func hasAvailable(in memory: GuestMemory) throws(VirtqueueError) -> Bool {
    guard isEnabled else { return false }
    return try load(UInt16.self, at: availableRing + 2, memory) != nextAvailable
  }

  /// Puts back the last `count` chains `next` returned, unused (a device waiting for enough
  /// room): the next calls return them again. Nothing may have been completed since.
  public mutating func giveBack(_ count: UInt16) {
    nextAvailable &-= count
  }

  /// Walks the chain starting at `head`.
  func chain(from head: UInt16, in memory: GuestMemory) throws(VirtqueueError) -> DescriptorChain {
    var result = DescriptorChain(head: head, buffers: [])
    try walk(from: head, into: &result, in: memory)
    return result
  }

  /// Walks the chain starting at `head` into `result` (its buffer list emptied first).
  func walk(from head: UInt16, into result: inout DescriptorChain, in memory: GuestMemory) throws(VirtqueueError) {
    result.head = head
    result.buffers.removeAll(keepingCapacity: true)
    var index = head
    var table = descriptorTable
    var tableSize = Int(size)
    var inIndirect = false
    var steps = 0
    var seenWritable = false
    while true {
      guard Int(index) < tableSize else {
        throw .descriptorIndexOutOfRange(index: index, queueSize: UInt16(clamping: tableSize))
      }
      steps += 1
      guard steps <= tableSize else { throw .chainTooLong(limit: tableSize) }
      let descriptor = table + 16 * UInt64(index)
      let address = try load(UInt64.self, at: descriptor, memory)
      let length = try load(UInt32.self, at: descriptor + 8, memory)
      let flags = try load(UInt16.self, at: descriptor + 12, memory)
      let next = try load(UInt16.self, at: descriptor + 14, memory)
      if flags & Flag.indirect != 0 {
        guard indirectDescriptors, !inIndirect, flags & Flag.next == 0, result.buffers.isEmpty else {
          throw .nestedIndirect
        }
        guard length > 0, length % 16 == 0, Int(length / 16) <= Self.maximumIndirectDescriptors else {
          throw .invalidIndirectTable(length: length)
        }
        guard memory.region(containing: address, length: UInt64(length)) != nil else {
          throw .bufferOutsideMemory(address: address, length: length)
        }
        table = address
        tableSize = Int(length / 16)
        inIndirect = true
        index = 0
        steps = 0
        continue
      }
      guard length == 0 || memory.region(containing: address, length: UInt64(length)) != nil else {
        throw .bufferOutsideMemory(address: address, length: length)
      }
      let writable = flags & Flag.write != 0
      if writable {
        seenWritable = true
      } else if seenWritable {
        throw .readableAfterWritable(index: index)
      }
      result.buffers.append(.init(address: address, length: length, isWritable: writable))
      guard flags & Flag.next != 0 else { return }
      index = next
    }
  }

  /// Returns a request to the driver: `written` bytes of its writable buffers were filled.
  public mutating func complete(_ head: UInt16, written: UInt32, in memory: GuestMemory) throws(VirtqueueError) {
    try recordUsed(head, written: written, in: memory)
    try publishUsed(in: memory)
  }

  /// Writes a used-ring element the driver cannot see yet: `publishUsed` shows every one
  /// written so far at once (a frame over several buffers must appear whole).
  public mutating func recordUsed(_ head: UInt16, written: UInt32, in memory: GuestMemory) throws(VirtqueueError) {
    guard isEnabled else { throw .descriptorIndexOutOfRange(index: head, queueSize: 0) }
    let element = usedRing + 4 + 8 * UInt64(nextUsed % size)
    try store(UInt32(head), at: element, memory)
    try store(written, at: element + 4, memory)
    nextUsed &+= 1
  }

  /// Publishes the used elements recorded so far: the used index moves past them.
  public mutating func publishUsed(in memory: GuestMemory) throws(VirtqueueError) {
    guard isEnabled else { return }
    // The elements before the index (virtio 1.2 §2.7.8.2).
    atomicMemoryFence(ordering: .releasing)
    try store(nextUsed, at: usedRing + 2, memory)
  }

  /// Whether the driver wants an interrupt for what was completed since the last decision.
  public mutating func shouldNotify(in memory: GuestMemory) throws(VirtqueueError) -> Bool {
    guard isEnabled else { return false }
    defer { signalledUsed = nextUsed }
    if eventIndex {
      let usedEvent = try load(UInt16.self, at: availableRing + 4 + 2 * UInt64(size), memory)
      // virtio 1.2 §2.7.10: notify when used_event lies in (old, new].
      return nextUsed &- usedEvent &- 1 < nextUsed &- signalledUsed
    }
    let flags = try load(UInt16.self, at: availableRing, memory)
    return flags & 1 == 0  // VIRTQ_AVAIL_F_NO_INTERRUPT
  }

  private func load<T: FixedWidthInteger>(_ type: T.Type, at address: UInt64, _ memory: GuestMemory)
    throws(VirtqueueError) -> T
  {
    do { return try memory.load(T.self, at: address) } catch { throw .ringOutsideMemory(address: address) }
  }

  private func store<T: FixedWidthInteger>(_ value: T, at address: UInt64, _ memory: GuestMemory)
    throws(VirtqueueError)
  {
    do { try memory.store(value, at: address) } catch { throw .ringOutsideMemory(address: address) }
  }
}
