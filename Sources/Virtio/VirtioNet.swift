import Glibc
import GuestMemory
import Network
import Synchronization

/// virtio-net (device type 1) over a host `NetworkBackend`: one receive and one transmit
/// queue and the control queue; the MAC address and link status in its configuration;
/// mergeable receive buffers; checksum and segmentation offloads passed through to back ends
/// that carry a virtio-net header (a tap); receive modes and the MAC filter.
///
/// The data path runs on host threads, never a vCPU's: the NIC's queue thread sends what the
/// driver transmits (a gather list straight from guest memory, no copy for a tap), and the
/// network pump delivers received frames into the buffers the driver posted. With no buffer
/// posted the back end holds the frame and reads no more until the driver posts some.
public final class VirtioNet: VirtioDevice, @unchecked Sendable {
  public let deviceType: UInt16 = 1
  public let deviceFeatures: UInt64
  /// receiveq0, transmitq0, controlq.
  public let queueSizes: [UInt16] = [256, 256, 64]
  static let receiveQueue = 0
  static let transmitQueue = 1
  static let controlQueue = 2
  /// The virtio-net header with `num_buffers` (virtio 1.x always has it).
  static let headerLength = 12
  /// The largest Ethernet frame accepted either way (64 KiB of segmentation offload plus
  /// its Ethernet header); anything longer is dropped.
  public static let maximumFrame = 65_550

  public let memory: GuestMemory
  public let backend: any NetworkBackend
  public let macAddress: MACAddress
  /// Interface traffic for `--stats` and the monitor.
  public let statistics = NetworkStatistics()
  private let linkUp = Atomic<Bool>(true)

  /// The receive side: its queue, the filter, and what was negotiated. Taken by the pump
  /// for every frame and briefly by the control queue.
  private struct ReceiveSide {
    var queue: SplitVirtqueue?
    var filter: VirtioNetReceiveFilter
    var mergeable = false
    /// Frames were delivered in a batch whose interrupt is still to be decided.
    var interruptPending = false
    /// The chains of the frame being placed (kept for its capacity).
    var scratch: [DescriptorChain] = []
  }
  private let receiveSide: Mutex<ReceiveSide>
  private let transmitSide = Mutex<SplitVirtqueue?>(nil)
  private let controlSide = Mutex<SplitVirtqueue?>(nil)
  /// Raises a queue's interrupt: given at activation, dropped at reset.
  private let interruptLine = Mutex<@Sendable (Int) -> Void>({ _ in })
  /// The chain being sent, its buffer list reused (touched under `transmitSide`'s lock only).
  private var transmitChain = DescriptorChain(head: 0, buffers: [])
  /// Gather list for one transmitted frame (touched under `transmitSide`'s lock only).
  private let gather = UnsafeMutableBufferPointer<iovec>.allocate(capacity: maximumGather)
  static let maximumGather = SplitVirtqueue.maximumIndirectDescriptors + 1

  /// Set by the VMM before the driver starts: serves the receive and transmit queues in its
  /// place (vhost-net), falling back to the device when it cannot.
  public var dataPlane: (any VirtioNetDataPlane)?
  private let offloaded = Atomic<Bool>(false)
  /// Set by the VMM: tells the pump the driver posted receive buffers (held frames may fit now).
  public var receiveRoom: @Sendable () -> Void = {}
  /// Set by the VMM: a queue broke the rules outside a kick (the transport sets DEVICE_NEEDS_RESET).
  public var queueBroken: @Sendable () -> Void = {}
  /// Set by the VMM: the configuration (link status) changed.
  public var configurationChanged: @Sendable () -> Void = {}

  /// The MTU the driver is told (VIRTIO_NET_F_MTU), when one was given.
  public let mtu: UInt16?
  /// Set after a restore until the driver acknowledges it has announced itself.
  private let announcing = Atomic<Bool>(false)
  private let negotiated = Atomic<UInt64>(0)

  public init(backend: any NetworkBackend, macAddress: MACAddress, memory: GuestMemory, mtu: UInt16? = nil) {
    self.backend = backend
    self.macAddress = macAddress
    self.memory = memory
    self.mtu = mtu
    deviceFeatures =
      VirtioNetFeature.mac | VirtioNetFeature.status | VirtioNetFeature.mergeableReceiveBuffers
      | VirtioNetFeature.controlQueue | VirtioNetFeature.controlReceive | VirtioNetFeature.controlMACAddress
      | VirtioNetFeature.guestAnnounce | (mtu != nil ? VirtioNetFeature.mtu : 0) | backend.offloadFeatures
    receiveSide = Mutex(ReceiveSide(queue: nil, filter: VirtioNetReceiveFilter(address: macAddress)))
  }

  deinit { gather.deallocate() }

  // MARK: Configuration: mac[6], status (u16), max_virtqueue_pairs (u16)

  public func readConfig(_ offset: Int, width: Int) -> UInt64 {
    // status: VIRTIO_NET_S_LINK_UP (1), VIRTIO_NET_S_ANNOUNCE (2).
    let status: UInt16 = (linkUp.load(ordering: .relaxed) ? 1 : 0) | (announcing.load(ordering: .relaxed) ? 2 : 0)
    let mtu = self.mtu ?? 1500
    var bytes = macAddress.bytes + [UInt8(status & 0xFF), UInt8(status >> 8), 1, 0]
    bytes += [UInt8(mtu & 0xFF), UInt8(mtu >> 8)] + [UInt8](repeating: 0, count: 6)
    guard offset >= 0, width > 0, offset + width <= bytes.count else { return 0 }
    return bytes[offset..<offset + width].reversed().reduce(0) { $0 << 8 | UInt64($1) }
  }

  /// The configuration is read-only for a virtio 1.x driver.
  public func writeConfig(_ offset: Int, width: Int, value: UInt64) {}

  /// Whether the link is up (what the guest's driver sees in `status`).
  public var isLinkUp: Bool { linkUp.load(ordering: .relaxed) }

  /// Sets the link up or down (QMP `set_link`): while it is down nothing is sent or received.
  public func setLink(up: Bool) {
    guard linkUp.exchange(up, ordering: .relaxed) != up else { return }
    configurationChanged()
    if up { receiveRoom() }
  }

  /// The receive filter now (for `query-rx-filter`).
  public var receiveFilter: VirtioNetReceiveFilter { receiveSide.withLock { $0.filter } }

  // MARK: Lifecycle

  public func activate(queues: [SplitVirtqueue], features: UInt64, interrupt: @escaping @Sendable (Int) -> Void) {
    interruptLine.withLock { $0 = interrupt }
    negotiated.store(features, ordering: .relaxed)
    backend.setNegotiatedFeatures(features)
    if let dataPlane, queues.count > Self.transmitQueue,
      dataPlane.start(receive: queues[Self.receiveQueue], transmit: queues[Self.transmitQueue], features: features)
    {
      offloaded.store(true, ordering: .releasing)
      receiveSide.withLock {
        $0.queue = nil
        $0.mergeable = features & VirtioNetFeature.mergeableReceiveBuffers != 0
      }
      transmitSide.withLock { $0 = nil }
      controlSide.withLock { $0 = queues.count > Self.controlQueue ? queues[Self.controlQueue] : nil }
      return
    }
    receiveSide.withLock {
      $0.queue = queues.count > Self.receiveQueue ? queues[Self.receiveQueue] : nil
      $0.mergeable = features & VirtioNetFeature.mergeableReceiveBuffers != 0
    }
    transmitSide.withLock { $0 = queues.count > Self.transmitQueue ? queues[Self.transmitQueue] : nil }
    controlSide.withLock { $0 = queues.count > Self.controlQueue ? queues[Self.controlQueue] : nil }
    receiveRoom()
  }

  public var queuePositions: [SplitVirtqueue.Position] {
    if let dataPlane, isOffloaded {
      return dataPlane.positions + [controlSide.withLock { $0?.position }].compactMap { $0 }
    }
    let receive = receiveSide.withLock { $0.queue?.position }
    let transmit = transmitSide.withLock { $0?.position }
    let control = controlSide.withLock { $0?.position }
    return [receive, transmit, control].compactMap { $0 }
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
    if offloaded.exchange(false, ordering: .acquiringAndReleasing) { dataPlane?.stop() }
    receiveSide.withLock {
      $0.queue = nil
      $0.filter = VirtioNetReceiveFilter(address: macAddress)
    }
    transmitSide.withLock { $0 = nil }
    controlSide.withLock { $0 = nil }
    interruptLine.withLock { $0 = { _ in } }
    backend.setNegotiatedFeatures(0)
  }

  private func interrupt(_ queue: Int) { interruptLine.withLock { $0 }(queue) }

  /// Raises queue `queue`'s interrupt for the data plane (its call eventfd fired).
  public func raiseInterrupt(queue: Int) { interrupt(queue) }

  /// Whether the data plane serves the receive and transmit queues now.
  public var isOffloaded: Bool { offloaded.load(ordering: .acquiring) }

  public func notify(queue index: Int, onIOThread: Bool) -> Bool {
    if index != Self.controlQueue, isOffloaded, let dataPlane {
      dataPlane.kick(queue: index)
      return true
    }
    switch index {
    case Self.receiveQueue:
      receiveRoom()
      return true
    case Self.transmitQueue: return transmit()
    case Self.controlQueue: return control()
    default: return true
    }
  }

  // MARK: Transmit

  /// Sends every frame the driver made available; false when the queue broke the rules.
  /// While it drains the queue the driver is asked not to kick (each kick is an exit); then
  /// kicks are asked for again and the ring looked at once more, so nothing is missed.
  private func transmit() -> Bool {
    var notify = false
    var broken = false
    var counts = TransmitCounts()
    transmitSide.withLock { queue in
      guard queue != nil else { return }
      do {
        try queue!.requestKick(false, in: memory)
        while true {
          // Used elements are published in groups: the driver gets its buffers back at most
          // 64 frames late, at a fraction of the index writes and fences.
          var unpublished = 0
          while try queue!.next(into: &transmitChain, in: memory, requestingKick: false) {
            send(transmitChain, counts: &counts)
            try queue!.recordUsed(transmitChain.head, written: 0, in: memory)
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
    statistics.transmitPackets.add(counts.packets, ordering: .relaxed)
    statistics.transmitBytes.add(counts.bytes, ordering: .relaxed)
    statistics.transmitDropped.add(counts.dropped, ordering: .relaxed)
    if notify { interrupt(Self.transmitQueue) }
    // Frames a back end answered with at once (user networking's ARP, TCP) were delivered
    // during the sends: their interrupt goes now.
    finishReceiveBatch()
    return !broken
  }

  /// What one drain of the transmit queue did, added to the statistics once.
  private struct TransmitCounts {
    var packets = 0
    var bytes = 0
    var dropped = 0
  }

  /// Hands one frame (header, then the Ethernet frame) to the back end, or counts it dropped.
  private func send(_ chain: DescriptorChain, counts: inout TransmitCounts) {
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
  public func receive(_ frame: UnsafeRawBufferPointer, batched: Bool = false) -> Bool {
    let offset = backend.headerLength
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
    receiveSide.withLock { side in
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
      if notify { interrupt(Self.receiveQueue) }
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
  public func finishReceiveBatch() {
    let notify = receiveSide.withLock { side -> Bool in
      guard side.interruptPending, side.queue != nil else { return false }
      side.interruptPending = false
      return (try? side.queue!.shouldNotify(in: memory)) ?? true
    }
    if notify { interrupt(Self.receiveQueue) }
  }

  enum Delivery {
    case delivered(notify: Bool)
    case noRoom, dropped, filtered, broken
  }

  /// Takes enough receive chains for header + payload (one without mergeable buffers), fills
  /// them and returns them to the driver.
  private static func place(
    header: UnsafeMutableRawBufferPointer, payload: UnsafeRawBufferPointer, into side: inout ReceiveSide,
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
          written += source.copy(into: target)
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
    var notify = false
    var broken = false
    controlSide.withLock { queue in
      guard queue != nil else { return }
      while true {
        let next: DescriptorChain?
        do { next = try queue!.next(in: memory) } catch {
          broken = true
          break
        }
        guard let chain = next else { break }
        let written = command(chain)
        do { try queue!.complete(chain.head, written: written, in: memory) } catch {
          broken = true
          break
        }
        notify = true
      }
      if broken {
        queue = nil
      } else if notify {
        notify = (try? queue!.shouldNotify(in: memory)) ?? true
      }
    }
    if notify { interrupt(Self.controlQueue) }
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
        ok = data.count == 2 && data[0] == 1 && data[1] == 0
      default:
        let (applied, filter) = receiveSide.withLock { side in
          (side.filter.apply(class: request[0], command: request[1], data: data), side.filter)
        }
        ok = applied
        if applied, isOffloaded { dataPlane?.setReceiveFilter(filter) }
      }
    }
    guard (try? memory.store(ok ? UInt8(0) : UInt8(1), at: ack.address)) != nil else { return 0 }
    return 1
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
