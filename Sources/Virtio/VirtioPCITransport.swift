import Devices
import GuestMemory
import Synchronization

/// Where a virtio-pci device's interrupts go: MSI-X messages, or the legacy INTx line.
public protocol VirtioInterruptSink: Sendable {
  /// Delivers MSI-X vector `vector` of the function, whose table entry now holds this
  /// message (the VMM keeps one irqfd route per vector and rewrites it when the message changes).
  func deliverMessage(vector: Int, address: UInt64, data: UInt32)
  /// Raises or lowers the function's INTx line.
  func setLine(_ asserted: Bool)
  /// An eventfd that delivers vector `vector` as this message with no VMM thread in between
  /// (a KVM irqfd), for a kernel data path to signal; nil when there is none.
  func directEvent(vector: Int, address: UInt64, data: UInt32) -> Int32?
}

extension VirtioInterruptSink {
  /// No direct path by default: interrupts go through `deliverMessage`.
  public func directEvent(vector: Int, address: UInt64, data: UInt32) -> Int32? { nil }
}

/// The virtio 1.x PCI transport (virtio 1.2 §4.1): a PCI function whose BAR 0 holds the
/// common configuration, ISR, device configuration and notification structures and the
/// MSI-X table, all announced through vendor capabilities. Devices plug in as `VirtioDevice`.
///
/// BAR 0 layout (16 KiB): common 0x0000, ISR 0x1000, device 0x2000, notify 0x3000 (4 bytes
/// a queue), MSI-X table 0x3800, pending bits 0x3C00.
public final class VirtioPCITransport: PCIFunction, @unchecked Sendable {
  public static let barSize: UInt64 = 0x4000
  enum Layout {
    static let common: UInt64 = 0x0000
    static let isr: UInt64 = 0x1000
    static let device: UInt64 = 0x2000
    static let notify: UInt64 = 0x3000
    static let notifyMultiplier: UInt32 = 4
    static let msixTable: UInt64 = 0x3800
    static let msixPending: UInt64 = 0x3C00
  }

  public let device: any VirtioDevice
  public var name: String { "virtio-pci (type \(device.deviceType))" }
  private let memory: GuestMemory
  private let sink: any VirtioInterruptSink
  private let state: Mutex<RegisterState>
  /// BAR 0's guest-physical address while memory decoding is on, else 0 (read on every MMIO access).
  private let decodedBAR = Atomic<UInt64>(0)
  // Closures behind a lock are kept in structs (see `QueueInterruptLine` for why).
  private struct BARObserver: Sendable { let moved: @Sendable (UInt64?) -> Void }
  private struct RoutingObserver: Sendable { let changed: @Sendable () -> Void }
  private let barObserver = Mutex(BARObserver { _ in })
  private let routingObserver = Mutex(RoutingObserver {})

  struct RegisterState: Codable {
    var space: PCIConfigSpace
    var common: VirtioCommonConfig
    var isr: UInt8 = 0
    var msixTable: [UInt8]
    var msixPending: UInt64 = 0
  }

  /// Offered on top of the device's own features.
  /// The MSI-X capability's message control register in configuration space.
  static let msixControl = 0x42

  static let transportFeatures = VirtioFeature.version1 | VirtioFeature.eventIndex | VirtioFeature.indirectDescriptors

  public init(device: any VirtioDevice, memory: GuestMemory, sink: any VirtioInterruptSink, classCode: UInt32) {
    self.device = device
    self.memory = memory
    self.sink = sink
    let vectors = device.queueSizes.count + 1
    var space = PCIConfigSpace(
      vendor: 0x1AF4, device: 0x1040 + device.deviceType, classCode: classCode, revision: 1,
      subsystemVendor: 0x1AF4, subsystem: 0x1100 + device.deviceType, interruptPin: 1)
    space.setBAR(0, .init(kind: .memory64, size: Self.barSize))
    Self.addCapabilities(to: &space, vectors: vectors)
    state = Mutex(
      RegisterState(
        space: space,
        common: VirtioCommonConfig(
          offeredFeatures: device.deviceFeatures | Self.transportFeatures, queueSizes: device.queueSizes),
        msixTable: Self.maskedTable(vectors)))
  }

  private static func maskedTable(_ vectors: Int) -> [UInt8] {
    var table = [UInt8](repeating: 0, count: 16 * vectors)
    for vector in 0..<vectors { table[16 * vector + 12] = 1 }  // masked until the driver says otherwise
    return table
  }

  /// MSI-X at 0x40, then the virtio capabilities (common, notify, ISR, device, PCI access),
  /// then PCI Express at 0xA4.
  private static func addCapabilities(to space: inout PCIConfigSpace, vectors: Int) {
    space.setCapabilityList(at: 0x40)
    func le32(_ value: UInt32) -> [UInt8] { (0..<4).map { UInt8(truncatingIfNeeded: value >> (8 * $0)) } }
    let control = UInt16(vectors - 1)
    space.setDeviceBytes(
      [0x11, 0x4C, UInt8(control & 0xFF), UInt8(control >> 8)] + le32(UInt32(Layout.msixTable))
        + le32(UInt32(Layout.msixPending)), at: 0x40, writable: [0, 0, 0, 0xC0])
    func virtio(_ type: UInt8, at offset: Int, next: UInt8, region: UInt64, length: UInt32, extra: [UInt8] = []) {
      let header: [UInt8] = [0x09, next, UInt8(16 + extra.count), type, 0, 0, 0, 0]
      space.setDeviceBytes(header + le32(UInt32(region)) + le32(length) + extra, at: offset)
    }
    virtio(1, at: 0x4C, next: 0x5C, region: Layout.common, length: UInt32(VirtioCommonConfig.Register.size))
    virtio(2, at: 0x5C, next: 0x70, region: Layout.notify, length: 0x800, extra: le32(Layout.notifyMultiplier))
    virtio(3, at: 0x70, next: 0x80, region: Layout.isr, length: 1)
    virtio(4, at: 0x80, next: 0x90, region: Layout.device, length: 0x1000)
    virtio(5, at: 0x90, next: 0xA4, region: 0, length: 0, extra: [0, 0, 0, 0])
    // PCI Express (version 2, root-complex integrated endpoint, as QEMU's virtio devices on
    // a q35 root bus): the guest then uses extended configuration space, through ECAM.
    var express = [UInt8](repeating: 0, count: 0x3C)
    express[0] = 0x10
    express[2] = 0x92  // capability version 2, device/port type 9
    var writable = [UInt8](repeating: 0, count: 0x3C)
    writable[8] = 0xFF  // device control
    writable[9] = 0xFF
    space.setDeviceBytes(express, at: 0xA4, writable: writable)
  }

  // MARK: Configuration space

  public func configRead(_ offset: Int, width: Int) -> UInt32 {
    state.withLock { $0.space.read(offset, width: width) }
  }

  public func configWrite(_ offset: Int, width: Int, value: UInt32) {
    let decoded = state.withLock { state -> UInt64 in
      state.space.write(offset, width: width, value: value)
      return state.space.memoryEnabled ? state.space.barAddress(0) ?? 0 : 0
    }
    // A 64-bit BAR is written in two halves; the device follows each step, as hardware does.
    if decodedBAR.exchange(decoded, ordering: .acquiringAndReleasing) != decoded {
      let observer = barObserver.withLock { $0 }
      observer.moved(decoded == 0 ? nil : decoded)
    }
    // The MSI-X control register (enable, function mask) or INTx disable.
    if (offset..<offset + width).overlaps(Self.msixControl..<Self.msixControl + 2) { interruptRoutingChanged() }
  }

  /// `observer` is called (on the thread that made the change) whenever where a queue's
  /// interrupt goes may have changed: MSI-X enabled or masked, a table entry or a queue's
  /// vector rewritten, the device started or restored. A kernel data path then asks
  /// `directInterrupt(queue:)` again.
  public func observeInterruptRouting(_ observer: @escaping @Sendable () -> Void) {
    routingObserver.withLock { $0 = RoutingObserver(changed: observer) }
  }

  private func interruptRoutingChanged() { routingObserver.withLock { $0 }.changed() }

  /// The eventfd that raises queue `index`'s interrupt with no VMM thread in between (its
  /// MSI-X vector's irqfd), while MSI-X is on and that vector unmasked with nothing pending;
  /// nil otherwise: the interrupt must then go through `signal(queue:)`, which pends it.
  public func directInterrupt(queue index: Int) -> Int32? {
    let target = state.withLock { state -> (vector: Int, address: UInt64, data: UInt32)? in
      let control = UInt16(state.space.read(Self.msixControl, width: 2))
      guard control & 0x8000 != 0, control & 0x4000 == 0, state.common.queues.indices.contains(index) else {
        return nil
      }
      let vector = Int(state.common.queues[index].msixVector)
      guard vector < state.msixTable.count / 16, state.msixPending & (1 << UInt64(vector)) == 0 else { return nil }
      let entry = Self.entry(state.msixTable, vector)
      return entry.masked ? nil : (vector, entry.address, entry.data)
    }
    guard let target else { return nil }
    return sink.directEvent(vector: target.vector, address: target.address, data: target.data)
  }

  /// `observer` is called (on the thread that wrote configuration space) whenever BAR 0
  /// moves, appears or stops decoding, with the new address or nil.
  public func observeBAR(_ observer: @escaping @Sendable (UInt64?) -> Void) {
    barObserver.withLock { $0 = BARObserver(moved: observer) }
  }

  public var configSpace: PCIConfigSpace { state.withLock { $0.space } }

  /// Where BAR 0 decodes (nil until memory decoding is on and a base is set).
  public var barAddress: UInt64? {
    let address = decodedBAR.load(ordering: .acquiring)
    return address == 0 ? nil : address
  }

  /// Whether `address` falls in BAR 0; the offset into it if so.
  @inline(__always)
  public func barOffset(of address: UInt64) -> UInt64? {
    let base = decodedBAR.load(ordering: .relaxed)
    guard base != 0, address >= base, address - base < Self.barSize else { return nil }
    return address - base
  }

  // MARK: BAR 0

  /// A read of BAR 0 at `offset`.
  public func barRead(_ offset: UInt64, width: Int) -> UInt64 {
    state.withLock { state in
      switch offset {
      case Layout.common..<Layout.common + UInt64(VirtioCommonConfig.Register.size):
        return state.common.read(Int(offset - Layout.common), width: width)
      case Layout.isr:
        // Reading the ISR acknowledges it and lowers INTx.
        let value = state.isr
        state.isr = 0
        if value != 0 { sink.setLine(false) }
        return UInt64(value)
      case Layout.device..<Layout.device + 0x1000:
        return device.readConfig(Int(offset - Layout.device), width: width)
      case Layout.msixTable..<Layout.msixTable + UInt64(state.msixTable.count):
        let start = Int(offset - Layout.msixTable)
        return (0..<min(width, state.msixTable.count - start)).reduce(0) {
          $0 | UInt64(state.msixTable[start + $1]) << (8 * UInt64($1))
        }
      case Layout.msixPending..<Layout.msixPending + 8:
        return state.msixPending >> (8 * (offset - Layout.msixPending))
      default:
        return 0
      }
    }
  }

  /// A write to BAR 0 at `offset` (a queue notification lands here unless an ioeventfd takes it first).
  public func barWrite(_ offset: UInt64, width: Int, value: UInt64) {
    var kick: Int?
    var effect = VirtioCommonConfig.Effect.none
    var pendingDelivery: [(Int, UInt64, UInt32)] = []
    state.withLock { state in
      switch offset {
      case Layout.common..<Layout.common + UInt64(VirtioCommonConfig.Register.size):
        effect = state.common.write(Int(offset - Layout.common), width: width, value: value)
      case Layout.device..<Layout.device + 0x1000:
        device.writeConfig(Int(offset - Layout.device), width: width, value: value)
      case Layout.notify..<Layout.notify + 0x800:
        kick = Int((offset - Layout.notify) / UInt64(Layout.notifyMultiplier))
      case Layout.msixTable..<Layout.msixTable + UInt64(state.msixTable.count):
        let start = Int(offset - Layout.msixTable)
        for byte in 0..<min(width, state.msixTable.count - start) {
          state.msixTable[start + byte] = UInt8(truncatingIfNeeded: value >> (8 * UInt64(byte)))
        }
        // Unmasking a vector with a pending message delivers it.
        let vector = start / 16
        if Self.entry(state.msixTable, vector).masked == false, state.msixPending & (1 << UInt64(vector)) != 0 {
          state.msixPending &= ~(1 << UInt64(vector))
          let entry = Self.entry(state.msixTable, vector)
          pendingDelivery.append((vector, entry.address, entry.data))
        }
      default:
        break
      }
    }
    for (vector, address, data) in pendingDelivery {
      sink.deliverMessage(vector: vector, address: address, data: data)
    }

    switch effect {
    case .reset: device.reset()
    case .driverReady: activate()
    case .none: break
    }
    // A table entry, a queue's vector or the device's start may move where interrupts go
    // (never a notification: those are the data path).
    if kick == nil, offset < Layout.isr || (Layout.msixTable..<Layout.msixPending).contains(offset) {
      interruptRoutingChanged()
    }
    if let kick { self.kick(queue: kick) }
  }

  /// The driver notified queue `index` (through the notify register or an ioeventfd):
  /// the device serves it; a queue that broke the rules gets DEVICE_NEEDS_RESET.
  /// `onIOThread`: the kick is served on the queue's I/O thread (not a vCPU's).
  public func kick(queue index: Int, onIOThread: Bool = false) {
    if !device.notify(queue: index, onIOThread: onIOThread) { markNeedsReset() }
  }

  /// Guest-physical addresses of each queue's notify register, once BAR 0 is placed.
  public var notifyAddresses: [UInt64] {
    guard let base = barAddress else { return [] }
    return device.queueSizes.indices.map { base + Layout.notify + UInt64($0) * UInt64(Layout.notifyMultiplier) }
  }

  /// Hands the enabled queues to the device (continuing from `positions` when a snapshot is
  /// restored), with the interrupt that signals them; a ring outside guest memory gets
  /// DEVICE_NEEDS_RESET instead.
  private func activate(restoring positions: [SplitVirtqueue.Position]? = nil) {
    let (queues, features, valid) = state.withLock { state -> ([SplitVirtqueue], UInt64, Bool) in
      let features = state.common.negotiatedFeatures
      var valid = true
      // Every queue keeps its index (a disabled one is a placeholder); saved positions are the
      // enabled queues', in order.
      var enabledSoFar = 0
      var queues = state.common.queues.map { queue -> SplitVirtqueue in
        guard queue.enabled else { return .disabled }
        var ring = SplitVirtqueue(
          size: queue.size, descriptorTable: queue.descriptorTable, availableRing: queue.driverArea,
          usedRing: queue.deviceArea, eventIndex: features & VirtioFeature.eventIndex != 0,
          indirectDescriptors: features & VirtioFeature.indirectDescriptors != 0)
        if (try? ring.validate(in: memory)) == nil || !ring.isEnabled { valid = false }
        if let positions, positions.indices.contains(enabledSoFar) { ring.restore(positions[enabledSoFar]) }
        enabledSoFar += 1
        return ring
      }
      while let last = queues.last, !last.isEnabled { queues.removeLast() }
      return (queues, features, valid)
    }
    guard valid else {
      markNeedsReset()
      return
    }
    device.activate(queues: queues, features: features) { [weak self] queue in self?.signal(queue: queue) }
  }

  /// Sets DEVICE_NEEDS_RESET and tells the driver (a device found its queue broken outside a kick).
  public func markNeedsReset() {
    state.withLock { $0.common.markNeedsReset() }
    signalConfigChange()
  }

  // MARK: Interrupts

  /// Tells the driver queue `index` has used buffers.
  public func signal(queue index: Int) {
    let vector = state.withLock { state -> UInt16 in
      state.common.queues.indices.contains(index) ? state.common.queues[index].msixVector : 0xFFFF
    }
    deliver(vector: vector, isrBit: 1)
  }

  /// Tells the driver the device configuration (or status) changed.
  public func signalConfigChange() {
    let vector = state.withLock { $0.common.configMSIXVector }
    deliver(vector: vector, isrBit: 2)
  }

  private func deliver(vector: UInt16, isrBit: UInt8) {
    enum Route {
      case message(Int, UInt64, UInt32)
      case line, nothing
    }
    let route = state.withLock { state -> Route in
      let control = UInt16(state.space.read(0x42, width: 2))
      let msix = control & 0x8000 != 0
      if msix {
        guard vector != 0xFFFF, Int(vector) < state.msixTable.count / 16 else { return .nothing }
        let entry = Self.entry(state.msixTable, Int(vector))
        if entry.masked || control & 0x4000 != 0 {
          state.msixPending |= 1 << UInt64(vector)
          return .nothing
        }
        return .message(Int(vector), entry.address, entry.data)
      }
      state.isr |= isrBit
      // Command bit 10 (INTx disable) keeps the line low; the ISR still records the cause.
      return UInt16(state.space.read(0x04, width: 2)) & 0x400 == 0 ? .line : .nothing
    }
    switch route {
    case .message(let vector, let address, let data): sink.deliverMessage(vector: vector, address: address, data: data)
    case .line: sink.setLine(true)
    case .nothing: break
    }
  }

  private static func entry(_ table: [UInt8], _ vector: Int) -> (address: UInt64, data: UInt32, masked: Bool) {
    let base = 16 * vector
    func le(_ at: Int, _ count: Int) -> UInt64 {
      (0..<count).reduce(0) { $0 | UInt64(table[at + $1]) << (8 * UInt64($1)) }
    }
    return (le(base, 8), UInt32(le(base + 8, 4)), table[base + 12] & 1 != 0)
  }
}

/// What a snapshot saves of a virtio-pci function: its configuration space, the common
/// configuration (features, status, queue setup), ISR, MSI-X table and pending bits, and where
/// the device is in each live queue (requests in flight were completed before).
public struct VirtioTransportState: Sendable, Codable {
  var transport: VirtioPCITransport.RegisterState
  var queues: [SplitVirtqueue.Position]
  /// The device's own state (a NIC's link, filter and queue pairs); absent in older snapshots.
  var device: VirtioDeviceState?
}

extension VirtioPCITransport: StatefulDevice {
  public static let stateVersion = 1

  public func saveState() -> VirtioTransportState {
    let transport = state.withLock { $0 }
    // The enabled queues' positions, in order (the device holds placeholders for the others).
    let positions = device.queuePositions
    let enabled = transport.common.queues.indices.filter {
      transport.common.queues[$0].enabled && positions.indices.contains($0)
    }
    return VirtioTransportState(transport: transport, queues: enabled.map { positions[$0] }, device: device.deviceState)
  }

  public func restoreState(_ saved: VirtioTransportState) throws(DeviceStateError) {
    let fresh = state.withLock { $0 }
    try saved.transport.space.checkShape(like: fresh.space)
    try saved.transport.common.checkShape(like: fresh.common)
    guard saved.transport.msixTable.count == fresh.msixTable.count else {
      throw DeviceStateError(
        "the MSI-X table has \(saved.transport.msixTable.count / 16) vectors, not \(fresh.msixTable.count / 16)")
    }
    let status = saved.transport.common.status
    let live = status & VirtioStatus.driverOK != 0 && status & (VirtioStatus.needsReset | VirtioStatus.failed) == 0
    let enabled = saved.transport.common.queues.filter(\.enabled).count
    guard !live || saved.queues.count == enabled else {
      throw DeviceStateError("\(saved.queues.count) queue positions for \(enabled) live queues")
    }
    if let deviceState = saved.device { try device.restore(deviceState: deviceState) }
    state.withLock { $0 = saved.transport }
    // BAR 0 where the guest left it (the queue notifiers follow), then the live queues.
    configWrite(0x04, width: 2, value: UInt32(saved.transport.space.read(0x04, width: 2)))
    if live {
      activate(restoring: saved.queues)
      interruptRoutingChanged()
      // Serve whatever the driver made available and may already have announced (its kick went
      // to the old process): a queue that needs no service is left as it is.
      for queue in saved.transport.common.queues.indices where saved.transport.common.queues[queue].enabled {
        kick(queue: queue)
      }
      device.restored()
    }
    let control = UInt16(saved.transport.space.read(0x42, width: 2))
    let intxEnabled = UInt16(saved.transport.space.read(0x04, width: 2)) & 0x400 == 0
    if control & 0x8000 == 0, saved.transport.isr != 0, intxEnabled { sink.setLine(true) }
  }
}
