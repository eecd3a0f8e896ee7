import Glibc
import KVM
import Synchronization
import Virtio

/// Serves a virtio device's queue kicks off the vCPU threads: each queue's notify register
/// is an ioeventfd (the guest's 16-bit write completes inside KVM), and one I/O thread per
/// device waits on them and lets the device drain the queue. When the driver moves BAR 0,
/// the ioeventfds move with it.
final class QueueNotifier: @unchecked Sendable {
  private let transport: VirtioPCITransport
  private let vm: KVMVirtualMachine
  private let events: [EventFD]
  private let external: Set<Int>
  private let stopEvent: EventFD
  /// Wakes the thread to look at its parking gate (pause and resume).
  private let controlEvent: EventFD
  private let gate = ParkingGate()
  private var thread: OSThread?
  /// The notify addresses currently registered with KVM (empty while BAR 0 does not decode).
  private let registered = Mutex<[UInt64]>([])

  /// Creates the eventfds, registers them at the current notify addresses and starts the
  /// thread; nil if that fails (kicks then arrive as MMIO exits and are served on the vCPU
  /// thread, which is slower but correct).
  /// `external`: queues whose kicks go to someone else (vhost-net reads those eventfds):
  /// registered with KVM like the others, never read here.
  init?(transport: VirtioPCITransport, vm: KVMVirtualMachine, name: String, external: [Int: EventFD] = [:]) {
    self.transport = transport
    self.vm = vm
    self.external = Set(external.keys)
    do {
      stopEvent = try EventFD()
      controlEvent = try EventFD()
      events = try transport.device.queueSizes.indices.map { index throws(KVMError) in
        if let event = external[index] { return event }
        return try EventFD()
      }
    } catch {
      return nil
    }
    guard rebind(to: transport.notifyAddresses) else { return nil }
    thread = try? OSThread(name: name) { [self] in
      serve()
      gate.markEnded()  // a pause never waits for a thread that is gone
    }
    if thread == nil {
      _ = rebind(to: [])
      return nil
    }
    transport.observeBAR { [weak self] _ in
      guard let self else { return }
      _ = self.rebind(to: self.transport.notifyAddresses)
    }
  }

  /// Moves the ioeventfds to `addresses`; false if KVM refused one (that queue's kicks then
  /// take the MMIO exit path).
  @discardableResult
  private func rebind(to addresses: [UInt64]) -> Bool {
    registered.withLock { registered in
      for (event, address) in zip(events, registered) {
        try? vm.unregisterIOEvent(event.rawValue, at: .mmio(address), length: 2)
      }
      registered = []
      var complete = true
      for (event, address) in zip(events, addresses) {
        do {
          try vm.registerIOEvent(event.rawValue, at: .mmio(address), length: 2)
          registered.append(address)
        } catch {
          complete = false
          break
        }
      }
      return complete
    }
  }

  private func serve() {
    var descriptors = [stopEvent, controlEvent].map { pollfd(fd: $0.rawValue, events: Int16(POLLIN), revents: 0) }
    for (index, event) in events.enumerated() {
      // A negative descriptor is skipped by poll(2): that queue's kicks are someone else's.
      descriptors.append(pollfd(fd: external.contains(index) ? -1 : event.rawValue, events: Int16(POLLIN), revents: 0))
    }
    while true {
      let ready = poll(&descriptors, nfds_t(descriptors.count), -1)
      if ready < 0 && errno == EINTR { continue }
      guard ready > 0, descriptors[0].revents == 0 else { return }
      if descriptors[1].revents != 0 {
        _ = try? controlEvent.wait()
        // Every kick the guest made before it was paused is served before the thread parks
        // (a snapshot must not hold a kick nobody saw); the vCPUs are parked, so none follow.
        serveReadyKicks(&descriptors)
        gate.parkWhileHeld()
        continue
      }
      for index in events.indices where descriptors[index + 2].revents != 0 {
        _ = try? events[index].wait()
        transport.kick(queue: index, onIOThread: true)
      }
    }
  }

  private func serveReadyKicks(_ descriptors: inout [pollfd]) {
    var queues = Array(descriptors[2...])
    guard poll(&queues, nfds_t(queues.count), 0) > 0 else { return }
    for index in events.indices where queues[index].revents != 0 {
      _ = try? events[index].wait()
      transport.kick(queue: index, onIOThread: true)
    }
  }

  /// Holds the thread between kicks; returns once it is held (or has stopped).
  func pause() {
    gate.hold { controlEvent.signal() }
  }

  /// Lets a held thread serve kicks again.
  func resume() {
    gate.release()
  }

  /// Stops the thread and waits for it.
  func stop() {
    transport.observeBAR { _ in }
    resume()
    stopEvent.signal()
    thread?.join()
    thread = nil
    gate.markEnded()
  }
}
