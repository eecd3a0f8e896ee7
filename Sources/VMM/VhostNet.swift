import CSystemCalls
import Glibc
import GuestMemory
import KVM
import Network
import Synchronization
import Virtio

/// The kernel's vhost-net as a NIC's data plane (`--net tap,...,vhost=on`): a kernel thread
/// moves frames between the guest's receive and transmit rings and the tap, with no exit to
/// skvm per frame. Kicks are the queues' ioeventfds, handed to the kernel; the kernel's
/// completions arrive on call eventfds that the NIC's pump turns into the device's
/// interrupts (MSI-X or INTx, masked or not, as the transport decides) — or, while a queue's
/// MSI-X vector is enabled and unmasked, straight to that vector's KVM irqfd, so the guest's
/// interrupt needs no skvm thread at all.
///
/// Before the driver starts the device, after a reset and if vhost refuses the rings, the
/// queues are served by skvm as usual. While the machine is paused the kernel is detached
/// from the tap, so nothing touches guest memory and the rings' positions can be read.
final class VhostNet: VirtioNetDataPlane, @unchecked Sendable {
  private let fd: Int32
  private let tap: TapBackend
  private let memory: GuestMemory
  /// The ring features the kernel supports.
  let supportedFeatures: UInt64
  /// Kick eventfds of the receive and transmit queues (the ioeventfds KVM signals).
  let kicks: [EventFD]
  /// Call eventfds the kernel signals when it used buffers.
  let calls: [EventFD]
  /// Error eventfds the kernel signals when a ring broke the rules (it stops serving it).
  let errors: [EventFD]
  /// Wakes the pump, which polls the call eventfds only while the data plane runs.
  var wake: @Sendable () -> Void = {}

  /// Where the kernel signals each ring's completions: the vector's irqfd when direct, else
  /// the relay eventfd in `calls` (nil). Kept across starts.
  private let callTargets = Mutex<[Int32?]>([nil, nil])

  /// The dirty log's address while a live migration logs writes (nil otherwise). Kept across
  /// starts: a driver that restarts the device mid-migration is logged too.
  private let logBase = Mutex<UInt64?>(nil)

  private struct Running {
    var rings: [SplitVirtqueue]
    /// The features given to the kernel (without VHOST_F_LOG_ALL).
    var features: UInt64
    /// Detached from the tap for a pause (positions read then).
    var suspended = false
    var positions: [SplitVirtqueue.Position] = []
  }
  private let running = Mutex<Running?>(nil)

  /// The ring features skvm asks vhost-net for, when the driver negotiated them.
  static let ringFeatures =
    VirtioFeature.version1 | VirtioFeature.eventIndex | VirtioFeature.indirectDescriptors
    | VirtioNetFeature.mergeableReceiveBuffers

  /// Opens /dev/vhost-net for `tap`; the error says why not (the caller falls back).
  init(tap: TapBackend, memory: GuestMemory) throws(NetworkError) {
    let fd = csys_vhost_open()
    guard fd >= 0 else {
      let code = errno
      throw NetworkError(
        code == ENOENT
          ? "/dev/vhost-net is missing (load it: modprobe vhost_net)"
          : "cannot use /dev/vhost-net: \(NetworkError.text(code))")
    }
    var features: UInt64 = 0
    guard csys_vhost_get_features(fd, &features) == 0 else {
      let code = errno
      Glibc.close(fd)
      throw NetworkError("vhost-net does not report its features: \(NetworkError.text(code))")
    }
    do {
      kicks = try [EventFD(), EventFD()]
      calls = try [EventFD(), EventFD()]
      errors = try [EventFD(), EventFD()]
    } catch {
      Glibc.close(fd)
      throw NetworkError("no eventfds for vhost-net: \(error)")
    }
    self.fd = fd
    self.tap = tap
    self.memory = memory
    supportedFeatures = features
  }

  deinit {
    stop()
    Glibc.close(fd)
  }

  /// Whether the kernel serves the rings now (the pump then polls the call eventfds).
  var isRunning: Bool { running.withLock { $0 != nil } }

  func start(receive: SplitVirtqueue, transmit: SplitVirtqueue, features: UInt64) -> Bool {
    let started = running.withLock { running -> Bool in
      if running != nil { detach(running!.rings.count) }
      running = nil
      let wanted = features & Self.ringFeatures
      let log = logBase.withLock { $0 }
      if let log, csys_vhost_set_log_base(fd, log) != 0 { return false }
      guard wanted & supportedFeatures == wanted,
        csys_vhost_set_features(fd, wanted | (log != nil ? Self.logAll : 0)) == 0
      else { return false }
      let regions = memory.regions
      let guest = regions.map(\.guestAddress)
      let sizes = regions.map(\.size)
      let hosts = regions.map { UInt64(UInt(bitPattern: $0.host)) }
      guard csys_vhost_set_memory(fd, UInt32(regions.count), guest, sizes, hosts) == 0 else { return false }
      let rings = [receive, transmit]
      let targets = callTargets.withLock { $0 }
      for (index, ring) in rings.enumerated() {
        guard let host = hostAddresses(of: ring),
          csys_vhost_set_ring(
            fd, UInt32(index), UInt32(ring.size), UInt32(ring.position.nextAvailable), host.table, host.available,
            host.used, log != nil ? ring.usedRing : UInt64.max, kicks[index].rawValue,
            targets[index] ?? calls[index].rawValue, errors[index].rawValue) == 0,
          csys_vhost_set_backend(fd, UInt32(index), tap.descriptor) == 0
        else {
          detach(index + 1)
          return false
        }
      }
      running = Running(rings: rings, features: wanted)
      return true
    }
    if started {
      // Kicks the guest made before the hand-over may sit unread in the eventfds the pump
      // polled until now: the kernel looks at the rings once on its own anyway.
      for kick in kicks { kick.signal() }
      // And an interrupt for each ring: one the kernel signalled just before a pause (or a
      // snapshot) may never have reached the guest; a spare one costs the driver a look.
      for call in calls { call.signal() }
      wake()
    }
    return started
  }

  /// VHOST_F_LOG_ALL.
  static let logAll: UInt64 = 1 << UInt64(CSYS_VHOST_F_LOG_ALL)

  /// Whether the kernel can log its writes to guest memory (every vhost-net since Linux 2.6.34).
  var canLogWrites: Bool { supportedFeatures & Self.logAll != 0 }

  /// Makes the kernel note every page it writes in `log` (a live migration's pre-copy), or
  /// stops it (nil): now if it serves the rings, and at every later start. False when the
  /// kernel refuses (the migration must not go on without the log).
  func setDirtyLog(_ log: VhostDirtyLog?) -> Bool {
    running.withLock { running in
      let base = log?.base
      logBase.withLock { $0 = base }
      guard let current = running else { return true }
      if let base, csys_vhost_set_log_base(fd, base) != 0 { return false }
      // The used rings' writes are logged (by guest address) before the kernel logs anything else.
      for (index, ring) in current.rings.enumerated() {
        guard let host = hostAddresses(of: ring),
          csys_vhost_set_ring_addresses(
            fd, UInt32(index), host.table, host.available, host.used, base != nil ? ring.usedRing : UInt64.max) == 0
        else { return false }
      }
      return csys_vhost_set_features(fd, current.features | (base != nil ? Self.logAll : 0)) == 0
    }
  }

  /// Points each ring's completions at `targets` (an irqfd, or nil for the relay eventfd),
  /// now if the kernel serves the rings and at the next start otherwise. A ring switched back
  /// to the relay (its vector masked) loses nothing: the pump turns what arrives there into
  /// the transport's pending bit.
  func setCallTargets(_ targets: [Int32?]) {
    running.withLock { running in
      let changed = callTargets.withLock { current -> [Int] in
        let changed = current.indices.filter { targets.indices.contains($0) && current[$0] != targets[$0] }
        for index in changed { current[index] = targets[index] }
        return changed
      }
      guard running != nil else { return }
      for index in changed {
        _ = csys_vhost_set_call(fd, UInt32(index), targets[index] ?? calls[index].rawValue)
      }
    }
    // A completion signalled to the relay just before the switch still reaches the guest.
    wake()
  }

  /// Host addresses of `ring`'s descriptor table, available and used rings (nil if any part
  /// lies outside RAM: the guest's addresses are untrusted).
  private func hostAddresses(of ring: SplitVirtqueue) -> (table: UInt64, available: UInt64, used: UInt64)? {
    let size = Int(ring.size)
    guard let table = try? memory.buffer(at: ring.descriptorTable, length: 16 * size),
      let available = try? memory.buffer(at: ring.availableRing, length: 6 + 2 * size),
      let used = try? memory.buffer(at: ring.usedRing, length: 6 + 8 * size)
    else { return nil }
    func address(_ buffer: UnsafeMutableRawBufferPointer) -> UInt64 { UInt64(UInt(bitPattern: buffer.baseAddress)) }
    return (address(table), address(available), address(used))
  }

  /// Detaches rings 0..<count from the tap (the kernel finishes what it was doing first).
  private func detach(_ count: Int) {
    for index in 0..<count { _ = csys_vhost_set_backend(fd, UInt32(index), -1) }
  }

  func stop() {
    running.withLock { running in
      if running != nil { detach(running!.rings.count) }
      running = nil
    }
    // skvm's own data path filters by itself: the tap lets everything through again.
    tap.filter(addresses: nil, allMulticast: false)
    wake()
  }

  /// Detaches the kernel for a pause and reads where the rings stand.
  func suspend() {
    running.withLock { running in
      guard running != nil, !running!.suspended else { return }
      detach(running!.rings.count)
      running!.suspended = true
      running!.positions = running!.rings.enumerated().map { index, ring in
        var base: UInt32 = 0
        _ = csys_vhost_get_ring_base(fd, UInt32(index), &base)
        let used = (try? memory.load(UInt16.self, at: ring.usedRing + 2)) ?? 0
        return SplitVirtqueue.Position(
          nextAvailable: UInt16(truncatingIfNeeded: base), nextUsed: used, signalledUsed: used)
      }
    }
  }

  /// Attaches the kernel again after a pause.
  func resume() {
    running.withLock { running in
      guard running != nil, running!.suspended else { return }
      for index in running!.rings.indices { _ = csys_vhost_set_backend(fd, UInt32(index), tap.descriptor) }
      running!.suspended = false
    }
    // A kick the kernel saw while detached found no tap and did nothing: look at the rings
    // once more (with EVENT_IDX the driver may not kick again for buffers it already added).
    for kick in kicks { kick.signal() }
  }

  var positions: [SplitVirtqueue.Position] {
    running.withLock { running in
      guard let running else { return [] }
      return running.suspended ? running.positions : running.rings.map(\.position)
    }
  }

  /// The filter goes into the tap (TUNSETTXFILTER): the kernel drops what the driver does not
  /// want before it reaches the rings. Promiscuous or an overflowed unicast table: everything.
  func setReceiveFilter(_ filter: VirtioNetReceiveFilter) {
    guard !filter.promiscuous, !filter.unicastOverflow else {
      tap.filter(addresses: nil, allMulticast: false)
      return
    }
    let broadcast: [UInt8] = [0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF]
    tap.filter(
      addresses: [filter.address, broadcast] + filter.unicastTable + filter.multicastTable,
      allMulticast: filter.allMulticast || filter.multicastOverflow)
  }

  func kick(queue: Int) {
    if kicks.indices.contains(queue) { kicks[queue].signal() }
  }
}
