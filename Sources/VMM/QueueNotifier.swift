import Glibc
import KVM
import Virtio

/// Serves a virtio device's queue kicks off the vCPU threads: each queue's notify register
/// is an ioeventfd (the guest's write completes inside KVM), and one I/O thread per device
/// waits on them and lets the device drain the queue.
final class QueueNotifier: @unchecked Sendable {
  private let transport: VirtioPCITransport
  private let events: [EventFD]
  private let stopEvent: EventFD
  private var thread: OSThread?

  /// Registers the ioeventfds and starts the thread; nil if KVM refuses (kicks then arrive
  /// as MMIO exits and are served on the vCPU thread, which is slower but correct).
  init?(transport: VirtioPCITransport, vm: KVMVirtualMachine, name: String) {
    self.transport = transport
    do {
      stopEvent = try EventFD()
      var events: [EventFD] = []
      for address in transport.notifyAddresses {
        let event = try EventFD()
        try vm.registerIOEvent(event.rawValue, at: .mmio(address), length: 2)
        events.append(event)
      }
      self.events = events
    } catch {
      return nil
    }
    thread = try? OSThread(name: name) { [self] in serve() }
    if thread == nil { return nil }
  }

  private func serve() {
    var descriptors = ([stopEvent] + events).map { pollfd(fd: $0.rawValue, events: Int16(POLLIN), revents: 0) }
    while true {
      let ready = poll(&descriptors, nfds_t(descriptors.count), -1)
      if ready < 0 && errno == EINTR { continue }
      guard ready > 0, descriptors[0].revents == 0 else { return }
      for index in events.indices where descriptors[index + 1].revents != 0 {
        _ = try? events[index].wait()
        transport.kick(queue: index)
      }
    }
  }

  /// Stops the thread and waits for it.
  func stop() {
    stopEvent.signal()
    thread?.join()
    thread = nil
  }
}
