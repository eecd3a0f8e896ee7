import Devices
import Glibc
import GuestMemory
import Network
import Synchronization

/// virtio-net (device type 1) over host `NetworkBackend`s: one or more receive/transmit
/// queue pairs (multiqueue: one back end per pair, such as the queues of a multiqueue tap)
/// and the control queue; the MAC address and link status in its configuration; mergeable
/// receive buffers; checksum and segmentation offloads passed through to back ends that carry
/// a virtio-net header (a tap); receive modes and the MAC filter.
///
/// The data path runs on host threads, never a vCPU's: the NIC's queue thread sends what the
/// driver transmits (a gather list straight from guest memory, no copy for a tap), and each
/// pair's network pump delivers received frames into the buffers the driver posted. With no
/// buffer posted the back end holds the frame and reads no more until the driver posts some.
public final class VirtioNet: VirtioDevice, @unchecked Sendable {
  public let deviceType: UInt16 = 1
  public let deviceFeatures: UInt64
  /// receiveq0, transmitq0, …, receiveqN-1, transmitqN-1, controlq.
  public let queueSizes: [UInt16]
  /// The header with `num_buffers` (virtio 1.x always has it).
  static let headerLength = 12
  /// The largest Ethernet frame accepted either way (64 KiB of segmentation offload plus
  /// its Ethernet header); anything longer is dropped.
  public static let maximumFrame = 65_550

  public let memory: GuestMemory
  /// The queue pairs, each with its own back end (the first is the only one without multiqueue).
  let pairs: [VirtioNetQueuePair]
  public let macAddress: MACAddress
  /// Interface traffic for `--stats` and the monitor (all queue pairs together).
  public let statistics = NetworkStatistics()
  private let linkUp = Atomic<Bool>(true)
  private let controlSide = Mutex<SplitVirtqueue?>(nil)
  /// The receive filter the control queue sets; each pair filters with a copy of it.
  private let filter: Mutex<VirtioNetReceiveFilter>
  /// Queue pairs the driver uses (VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET); 1 after every reset.
  private let activePairs = Atomic<Int>(1)
  /// Raises a queue's interrupt: given at activation, dropped at reset.
  private let interruptLine = QueueInterruptLine()

  /// Set by the VMM: a queue broke the rules outside a kick (the transport sets DEVICE_NEEDS_RESET).
  public var queueBroken: @Sendable () -> Void = {}
  /// Set by the VMM: the configuration (link status) changed.
  public var configurationChanged: @Sendable () -> Void = {}

  /// The MTU the driver is told (VIRTIO_NET_F_MTU), when one was given.
  public let mtu: UInt16?
  /// Set after a restore until the driver acknowledges it has announced itself.
  private let announcing = Atomic<Bool>(false)
  private let negotiated = Atomic<UInt64>(0)

  /// A NIC with one queue pair for `backend` and one more for each of `additional` (all alike:
  /// the first one's header length and offloads are the NIC's).
  public init(
    backend: any NetworkBackend, additional: [any NetworkBackend] = [], macAddress: MACAddress, memory: GuestMemory,
    mtu: UInt16? = nil
  ) {
    let backends = [backend] + additional
    pairs = backends.map { VirtioNetQueuePair(backend: $0, filter: VirtioNetReceiveFilter(address: macAddress)) }
    self.macAddress = macAddress
    self.memory = memory
    self.mtu = mtu
    queueSizes = Array(repeating: 256, count: 2 * backends.count) + [64]
    deviceFeatures =
      VirtioNetFeature.mac | VirtioNetFeature.status | VirtioNetFeature.mergeableReceiveBuffers
      | VirtioNetFeature.controlQueue | VirtioNetFeature.controlReceive | VirtioNetFeature.controlMACAddress
      | VirtioNetFeature.guestAnnounce | (mtu != nil ? VirtioNetFeature.mtu : 0)
      | (backends.count > 1 ? VirtioNetFeature.multiqueue : 0) | backend.offloadFeatures
    filter = Mutex(VirtioNetReceiveFilter(address: macAddress))
  }

  /// The first pair's back end (the only one without multiqueue).
  public var backend: any NetworkBackend { pairs[0].backend }
  /// Every pair's back end, in order.
  public var backends: [any NetworkBackend] { pairs.map(\.backend) }
  /// Queue pairs the device has (`max_virtqueue_pairs`).
  public var queuePairCount: Int { pairs.count }
  /// Queue pairs the driver uses now.
  public var activeQueuePairs: Int { activePairs.load(ordering: .relaxed) }

  /// Sets pair `pair`'s data plane (vhost-net) before the driver starts: it serves that pair's
  /// queues in the device's place, which falls back to serving them itself when it cannot.
  public func setDataPlane(_ plane: (any VirtioNetDataPlane)?, pair: Int) { pairs[pair].dataPlane = plane }
  /// Pair `pair`'s data plane, if it has one.
  public func dataPlane(pair: Int) -> (any VirtioNetDataPlane)? { pairs[pair].dataPlane }
  /// Set by the VMM: tells pair `pair`'s pump the driver posted receive buffers.
  public func onReceiveRoom(pair: Int, _ handler: @escaping @Sendable () -> Void) { pairs[pair].receiveRoom = handler }

  // MARK: Configuration: mac[6], status (u16), max_virtqueue_pairs (u16), mtu (u16)

  public func readConfig(_ offset: Int, width: Int) -> UInt64 {
    guard offset >= 0, width > 0, offset + width <= Self.configurationSize else { return 0 }
    var value: UInt64 = 0
    for index in (offset..<offset + width).reversed() { value = value << 8 | UInt64(configurationByte(index)) }
    return value
  }

  static let configurationSize = 18

  private func configurationByte(_ index: Int) -> UInt8 {
    func low(_ value: UInt16, _ high: Bool) -> UInt8 { UInt8(truncatingIfNeeded: high ? value >> 8 : value) }
    switch index {
    case 0..<6: return macAddress.bytes[index]
    case 6, 7:
      // status: VIRTIO_NET_S_LINK_UP (1), VIRTIO_NET_S_ANNOUNCE (2).
      let status: UInt16 = (linkUp.load(ordering: .relaxed) ? 1 : 0) | (announcing.load(ordering: .relaxed) ? 2 : 0)
      return low(status, index == 7)
    case 8, 9: return low(UInt16(pairs.count), index == 9)
    case 10, 11: return low(mtu ?? 1500, index == 11)
    default: return 0
    }
  }

  /// The configuration is read-only for a virtio 1.x driver.
  public func writeConfig(_ offset: Int, width: Int, value: UInt64) {}

  /// Whether the link is up (what the guest's driver sees in `status`).
  public var isLinkUp: Bool { linkUp.load(ordering: .relaxed) }

  /// Sets the link up or down (QMP `set_link`): while it is down nothing is sent or received.
  public func setLink(up: Bool) {
    guard linkUp.exchange(up, ordering: .relaxed) != up else { return }
    configurationChanged()
    if up { for pair in pairs { pair.receiveRoom() } }
  }

  /// The receive filter now (for `query-rx-filter`).
  public var receiveFilter: VirtioNetReceiveFilter { filter.withLock { $0 } }

  // MARK: Queues

  /// Queue pairs the negotiated features give the driver (all with multiqueue, else one).
  private func pairCount(_ features: UInt64) -> Int {
    features & VirtioNetFeature.multiqueue != 0 ? pairs.count : 1
  }

  /// The control queue's index: after the last pair the driver may use (virtio 1.2 §5.1.2).
  private var controlQueue: Int { 2 * pairCount(negotiated.load(ordering: .relaxed)) }

  // MARK: Lifecycle

  /// Takes the driver's queues (enabled ones, in order: the pairs first, then the control queue).
  public func activate(queues: [SplitVirtqueue], features: UInt64, interrupt: @escaping @Sendable (Int) -> Void) {
    interruptLine.connect(interrupt)
    negotiated.store(features, ordering: .relaxed)
    let usable = pairCount(features)
    let mergeable = features & VirtioNetFeature.mergeableReceiveBuffers != 0
    let receiveFilter = filter.withLock { $0 }
    // Only the pairs the driver enabled receive: the first one until it enables more (virtio
    // 1.2 §5.1.6.5.5), or those a restored snapshot had in use.
    let enabled = activePairs.load(ordering: .relaxed)
    for (index, pair) in pairs.enumerated() {
      pair.backend.setNegotiatedFeatures(features)
      pair.backend.setQueueEnabled(index < enabled)
      let live = index < usable && queues.count > 2 * index + 1
      let receive = live ? queues[2 * index] : nil
      let transmit = live ? queues[2 * index + 1] : nil
      var offload = false
      if let receive, let transmit, let plane = pair.dataPlane {
        offload = plane.start(receive: receive, transmit: transmit, features: features)
      }
      pair.offloaded.store(offload, ordering: .releasing)
      pair.receive.withLock {
        $0.queue = offload ? nil : receive
        $0.mergeable = mergeable
        $0.filter = receiveFilter
      }
      pair.transmit.withLock { $0 = offload ? nil : transmit }
      if offload { pair.dataPlane?.setReceiveFilter(receiveFilter) }
      if !offload, receive != nil { pair.receiveRoom() }
    }
    controlSide.withLock { $0 = queues.count > 2 * usable ? queues[2 * usable] : nil }
  }

  public var queuePositions: [SplitVirtqueue.Position] {
    let usable = pairCount(negotiated.load(ordering: .relaxed))
    var positions: [SplitVirtqueue.Position] = []
    for pair in pairs.prefix(usable) {
      if let plane = pair.dataPlane, pair.isOffloaded {
        positions += plane.positions
      } else {
        positions += [pair.receive.withLock { $0.queue?.position }, pair.transmit.withLock { $0?.position }]
          .compactMap { $0 }
      }
    }
    return positions + [controlSide.withLock { $0?.position }].compactMap { $0 }
  }

  /// After a restore the guest's switches may not know where it is now: ask the driver to
  /// announce itself (gratuitous ARP, IPv6 neighbour advertisements), if it offered to.
  public func restored() {
    guard negotiated.load(ordering: .relaxed) & VirtioNetFeature.guestAnnounce != 0 else { return }
    announcing.store(true, ordering: .relaxed)
    configurationChanged()
  }

  /// Whether an announcement is asked for and not yet acknowledged.
  public var isAnnouncing: Bool { announcing.load(ordering: .relaxed) }

  public func reset() {
    announcing.store(false, ordering: .relaxed)
    negotiated.store(0, ordering: .relaxed)
    activePairs.store(1, ordering: .relaxed)
    let fresh = VirtioNetReceiveFilter(address: macAddress)
    filter.withLock { $0 = fresh }
    for pair in pairs {
      if pair.offloaded.exchange(false, ordering: .acquiringAndReleasing) { pair.dataPlane?.stop() }
      pair.receive.withLock {
        $0.queue = nil
        $0.filter = fresh
      }
      pair.transmit.withLock { $0 = nil }
      pair.backend.setNegotiatedFeatures(0)
    }
    controlSide.withLock { $0 = nil }
    interruptLine.disconnect()
  }

  private func interrupt(_ queue: Int) { interruptLine.raise(queue) }

  /// Raises queue `queue`'s interrupt for a data plane (its call eventfd fired).
  public func raiseInterrupt(queue: Int) { interrupt(queue) }

  /// Whether a data plane serves the first pair's queues now.
  public var isOffloaded: Bool { pairs[0].isOffloaded }

  public func notify(queue index: Int, onIOThread: Bool) -> Bool {
    let controlIndex = controlQueue
    if index == controlIndex { return control() }
    guard index >= 0, index < controlIndex, pairs.indices.contains(index / 2) else { return true }
    let pair = pairs[index / 2]
    if pair.isOffloaded, let plane = pair.dataPlane {
      plane.kick(queue: index % 2)
      return true
    }
    if index % 2 == 0 {
      pair.receiveRoom()
      return true
    }
    return transmit(pair: index / 2)
  }

  // MARK: Transmit

  /// Sends every frame the driver made available; false when the queue broke the rules.
  /// While it drains the queue the driver is asked not to kick (each kick is an exit); then
  /// kicks are asked for again and the ring looked at once more, so nothing is missed.
  private func transmit(pair index: Int) -> Bool {
    let pair = pairs[index]
    var notify = false
    var broken = false
    var counts = TransmitCounts()
    pair.transmit.withLock { queue in
      guard queue != nil else { return }
      do {
        try queue!.requestKick(false, in: memory)
        while true {
          // Used elements are published in groups: the driver gets its buffers back at most
          // 64 frames late, at a fraction of the index writes and fences.
          var unpublished = 0
          while try queue!.next(into: &pair.transmitChain, in: memory, requestingKick: false) {
            send(pair.transmitChain, through: pair, counts: &counts)
            try queue!.recordUsed(pair.transmitChain.head, written: 0, in: memory)
            notify = true
            unpublished += 1
            if unpublished == 64 {
              try queue!.publishUsed(in: memory)
              unpublished = 0
            }
          }
          if unpublished > 0 { try queue!.publishUsed(in: memory) }
          try queue!.requestKick(true, in: memory)
          guard try queue!.hasAvailable(in: memory) else { break }
          try queue!.requestKick(false, in: memory)
        }
        if notify { notify = try queue!.shouldNotify(in: memory) }
      } catch {
        broken = true
        queue = nil  // served no more until the driver resets the device
      }
    }
    if counts.packets > 0 { pair.backend.finishSending() }
    statistics.transmitPackets.add(counts.packets, ordering: .relaxed)
    statistics.transmitBytes.add(counts.bytes, ordering: .relaxed)
    statistics.transmitDropped.add(counts.dropped, ordering: .relaxed)
    if notify { interrupt(2 * index + 1) }
    // Frames a back end answered with at once (user networking's ARP, TCP) were delivered
    // during the sends: their interrupt goes now.
    finishReceiveBatch(pair: index)
    return !broken
  }

  /// What one drain of the transmit queue did, added to the statistics once.
  private struct TransmitCounts {
    var packets = 0
    var bytes = 0
    var dropped = 0
  }

  /// Hands one frame (header, then the Ethernet frame) to the back end, or counts it dropped.
  private func send(_ chain: DescriptorChain, through pair: VirtioNetQueuePair, counts: inout TransmitCounts) {
    let backend = pair.backend
    let gather = pair.gather
    var length = 0
    var readable = 0
    for buffer in chain.buffers {
      if buffer.isWritable { break }
      length += Int(buffer.length)
      readable += 1
    }
    guard length >= Self.headerLength + 14, length <= Self.headerLength + Self.maximumFrame, readable <= gather.count,
      linkUp.load(ordering: .relaxed)
    else {
      counts.dropped += 1
      return
    }
    // The back end takes the header only if it carries one; otherwise skip its 12 bytes.
    var skip = backend.headerLength == 0 ? Self.headerLength : 0
    var count = 0
    for buffer in chain.buffers[..<readable] {
      let size = Int(buffer.length)
      if skip >= size {
        skip -= size
        continue
      }
      guard let bytes = try? memory.buffer(at: buffer.address + UInt64(skip), length: size - skip) else {
        counts.dropped += 1
        return
      }
      skip = 0
      gather[count] = iovec(iov_base: bytes.baseAddress, iov_len: bytes.count)
      count += 1
    }
    if backend.send(UnsafeBufferPointer(rebasing: gather[0..<count])) {
      counts.packets += 1
      counts.bytes += length - Self.headerLength
    } else {
      counts.dropped += 1
    }
  }

  // MARK: Receive

  /// Offers a frame from the back end (its header first when it has one). True when it was
  /// delivered or dropped; false when the driver has no room now (offer it again later).
  /// `batched`: the interrupt waits for `finishReceiveBatch` (one for a burst of frames).
  public func receive(_ frame: UnsafeRawBufferPointer, pair index: Int = 0, batched: Bool = false) -> Bool {
    let pair = pairs[index]
    let offset = pair.backend.headerLength
    guard frame.count >= offset + 14, frame.count - offset <= Self.maximumFrame, linkUp.load(ordering: .relaxed)
    else {
      statistics.receiveDropped.add(1, ordering: .relaxed)
      return true
    }
    let payload = UnsafeRawBufferPointer(rebasing: frame[offset...])
    // The 12-byte header on the stack: the back end's when it has one (num_buffers set below).
    var header: (UInt64, UInt32) = (0, 0)
    if offset == Self.headerLength {
      withUnsafeMutableBytes(of: &header) { $0.copyMemory(from: UnsafeRawBufferPointer(rebasing: frame[0..<10])) }
    }
    var outcome = Delivery.noRoom
    pair.receive.withLock { side in
      guard side.queue != nil else {
        outcome = .dropped
        return
      }
      guard side.filter.accepts(destination: payload) else {
        outcome = .filtered
        return
      }
      outcome = withUnsafeMutableBytes(of: &header) { header in
        Self.place(header: header, payload: payload, into: &side, memory: memory, batched: batched)
      }
    }
    switch outcome {
    case .delivered(let notify):
      statistics.receivePackets.add(1, ordering: .relaxed)
      statistics.receiveBytes.add(payload.count, ordering: .relaxed)
      if notify { interrupt(2 * index) }
      return true
    case .noRoom:
      return false
    case .dropped:
      statistics.receiveDropped.add(1, ordering: .relaxed)
      return true
    case .filtered:
      statistics.receiveFiltered.add(1, ordering: .relaxed)
      return true
    case .broken:
      statistics.receiveDropped.add(1, ordering: .relaxed)
      queueBroken()
      return true
    }
  }

  /// Ends a burst of `batched` deliveries: one interrupt for all of them, if the driver wants one.
  public func finishReceiveBatch(pair index: Int = 0) {
    let notify = pairs[index].receive.withLock { side -> Bool in
      guard side.interruptPending, side.queue != nil else { return false }
      side.interruptPending = false
      return (try? side.queue!.shouldNotify(in: memory)) ?? true
    }
    if notify { interrupt(2 * index) }
  }

  enum Delivery {
    case delivered(notify: Bool)
    case noRoom, dropped, filtered, broken
  }

  /// Takes enough receive chains for header + payload (one without mergeable buffers), fills
  /// them and returns them to the driver.
  private static func place(
    header: UnsafeMutableRawBufferPointer, payload: UnsafeRawBufferPointer,
    into side: inout VirtioNetQueuePair.ReceiveSide,
    memory: GuestMemory, batched: Bool
  ) -> Delivery {
    let total = headerLength + payload.count
    // Chains (and their buffer lists) reused from frame to frame: no allocation per frame.
    var chains = side.scratch
    side.scratch = []
    defer { side.scratch = chains }
    var taken = 0
    var capacity = 0
    do {
      while capacity < total {
        if taken == chains.count { chains.append(DescriptorChain(head: 0, buffers: [])) }
        guard try side.queue!.next(into: &chains[taken], in: memory) else {
          side.queue!.giveBack(UInt16(taken))
          return .noRoom
        }
        capacity += chains[taken].writableLength
        taken += 1
        if !side.mergeable { break }
      }
    } catch {
      side.queue = nil  // served no more until the driver resets the device
      return .broken
    }
    guard capacity >= total else {
      // One chain without mergeable buffers, too small for this frame: keep it for the next.
      side.queue!.giveBack(UInt16(taken))
      return .dropped
    }
    header[10] = UInt8(truncatingIfNeeded: taken)
    header[11] = UInt8(truncatingIfNeeded: taken >> 8)
    var source = ScatterSource(header: UnsafeRawBufferPointer(header), payload: payload)
    do {
      for chain in chains[..<taken] {
        var written = 0
        for buffer in chain.writable where buffer.length > 0 && !source.isFinished {
          guard let target = try? memory.bufferForWriting(at: buffer.address, length: Int(buffer.length)) else {
            continue
          }
          let copied = source.copy(into: target)
          memory.finishedWriting(at: buffer.address, length: copied)
          written += copied
        }
        try side.queue!.recordUsed(chain.head, written: UInt32(written), in: memory)
      }
      // Every buffer of the frame appears at once: a driver reading num_buffers finds them all.
      try side.queue!.publishUsed(in: memory)
      if batched {
        side.interruptPending = true
        return .delivered(notify: false)
      }
      return .delivered(notify: try side.queue!.shouldNotify(in: memory))
    } catch {
      side.queue = nil
      return .broken
    }
  }

  /// Reads the header, then the payload, into successive buffers.
  private struct ScatterSource {
    let header: UnsafeRawBufferPointer
    let payload: UnsafeRawBufferPointer
    var position = 0
    var isFinished: Bool { position >= header.count + payload.count }

    init(header: UnsafeRawBufferPointer, payload: UnsafeRawBufferPointer) {
      self.header = header
      self.payload = payload
    }

    /// Copies as much as fits into `target`; returns how many bytes.
    mutating func copy(into target: UnsafeMutableRawBufferPointer) -> Int {
      var done = 0
      while done < target.count && !isFinished {
        let count: Int
        if position < header.count {
          count = min(header.count - position, target.count - done)
          (target.baseAddress! + done).copyMemory(from: header.baseAddress! + position, byteCount: count)
        } else {
          let start = position - header.count
          count = min(payload.count - start, target.count - done)
          (target.baseAddress! + done).copyMemory(from: payload.baseAddress! + start, byteCount: count)
        }
        done += count
        position += count
      }
      return done
    }
  }

  // MARK: Control queue

  private func control() -> Bool {
    let (notify, broken) = controlSide.withLock { queue -> (Bool, Bool) in
      guard queue != nil else { return (false, false) }
      let result = VirtqueueService.drain(&queue!, memory: memory) { command($0) }
      if result.broken { queue = nil }  // served no more until the driver resets the device
      return (result.notify && !result.broken, result.broken)
    }
    if notify { interrupt(controlQueue) }
    return !broken
  }

  /// Carries out one control command; writes the ack byte and returns the bytes written.
  private func command(_ chain: DescriptorChain) -> UInt32 {
    guard let ack = chain.writable.first(where: { $0.length > 0 }) else { return 0 }
    var request: [UInt8] = []
    var valid = chain.readableLength <= 4 + 6 * 2 * 1024
    for buffer in chain.readable where valid {
      guard let bytes = try? memory.bytes(at: buffer.address, length: Int(buffer.length)) else {
        valid = false
        break
      }
      request += bytes
    }
    var ok = false
    if valid, request.count >= 2 {
      let data = Array(request[2...])
      switch (request[0], request[1]) {
      case (VirtioNetReceiveFilter.Command.announceClass, VirtioNetReceiveFilter.Command.announceAcknowledge):
        announcing.store(false, ordering: .relaxed)
        ok = true
      case (VirtioNetReceiveFilter.Command.multiqueueClass, VirtioNetReceiveFilter.Command.pairsSet):
        let count = data.count == 2 ? Int(data[0]) | Int(data[1]) << 8 : 0
        ok = negotiated.load(ordering: .relaxed) & VirtioNetFeature.multiqueue != 0 && (1...pairs.count).contains(count)
        if ok { setActivePairs(count) }
      default:
        let (applied, changed) = filter.withLock { filter in
          (filter.apply(class: request[0], command: request[1], data: data), filter)
        }
        ok = applied
        if applied { setReceiveFilter(changed) }
      }
    }
    guard (try? memory.store(ok ? UInt8(0) : UInt8(1), at: ack.address)) != nil else { return 0 }
    return 1
  }
}

extension VirtioNet {
  /// Uses the first `count` queue pairs: the others' host queues are detached, so the host
  /// steers no frame to a pair the driver does not serve.
  func setActivePairs(_ count: Int) {
    activePairs.store(count, ordering: .relaxed)
    for (index, pair) in pairs.enumerated() { pair.backend.setQueueEnabled(index < count) }
  }

  /// Gives every pair (and data plane) the driver's receive filter.
  func setReceiveFilter(_ changed: VirtioNetReceiveFilter) {
    for pair in pairs {
      pair.receive.withLock { $0.filter = changed }
      if pair.isOffloaded { pair.dataPlane?.setReceiveFilter(changed) }
    }
  }

  /// What a snapshot keeps of the device beyond its rings: the link, the filter and the
  /// queue pairs in use.
  public var deviceState: VirtioDeviceState? {
    .net(VirtioNetState(linkUp: isLinkUp, filter: receiveFilter, activePairs: activeQueuePairs))
  }

  /// Restores what `deviceState` saved (before the transport activates the queues), or
  /// changes nothing and says what is wrong with it.
  public func restore(deviceState: VirtioDeviceState) throws(DeviceStateError) {
    guard case .net(let saved) = deviceState else {
      throw DeviceStateError("saved state of another kind of device for virtio-net")
    }
    guard (1...pairs.count).contains(saved.activePairs) else {
      throw DeviceStateError("\(saved.activePairs) queue pairs in use, but the NIC has \(pairs.count)")
    }
    try saved.filter.validate()
    linkUp.store(saved.linkUp, ordering: .relaxed)
    filter.withLock { $0 = saved.filter }
    setReceiveFilter(saved.filter)
    setActivePairs(saved.activePairs)
  }
}

/// Counters of one network interface, as `--stats` and the monitor show them.
public final class NetworkStatistics: Sendable {
  public let receivePackets = Atomic<Int>(0)
  public let receiveBytes = Atomic<Int>(0)
  /// Frames from the host dropped: no driver, link down, malformed, too long for the buffers.
  public let receiveDropped = Atomic<Int>(0)
  /// Frames the receive filter kept from the driver.
  public let receiveFiltered = Atomic<Int>(0)
  public let transmitPackets = Atomic<Int>(0)
  public let transmitBytes = Atomic<Int>(0)
  /// Frames from the driver not sent: malformed, link down, or refused by the host side.
  public let transmitDropped = Atomic<Int>(0)

  public init() {}
}
