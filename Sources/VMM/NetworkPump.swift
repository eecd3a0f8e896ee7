import Glibc
import KVM
import Network
import Virtio

/// The receive side of one NIC, on a host thread of its own: polls the back end (a tap's
/// descriptor, libslirp's sockets and timers) and hands what arrives to the virtio-net
/// device. It sleeps in poll(2) when there is nothing to do, and while the guest has posted
/// no receive buffers it polls only for the driver's kick (no busy loop).
final class NetworkPump: @unchecked Sendable {
  private let backend: any NetworkBackend
  private weak var device: VirtioNet?
  private let stopEvent: EventFD
  /// Wakes the thread: buffers posted, the back end has work, or a pause was asked for.
  private let wakeEvent: EventFD
  private let pauseLock = ConditionLock()
  /// Guarded by `pauseLock`.
  private var held = false
  private var parked = false
  private var thread: OSThread?

  /// Connects `device`'s back end to it and starts the thread; nil if no thread could start.
  init?(device: VirtioNet, name: String) {
    backend = device.backend
    do {
      stopEvent = try EventFD()
      wakeEvent = try EventFD()
    } catch {
      return nil
    }
    let wake = wakeEvent
    backend.attach(
      deliver: { [weak device] frame in device?.receive(frame, batched: true) ?? true }, wake: { wake.signal() })
    device.receiveRoom = { wake.signal() }
    self.device = device
    thread = try? OSThread(name: name) { [self] in serve() }
    if thread == nil { return nil }
  }

  private func serve() {
    var descriptors: [pollfd] = []
    while true {
      descriptors.removeAll(keepingCapacity: true)
      descriptors.append(pollfd(fd: stopEvent.rawValue, events: Int16(POLLIN), revents: 0))
      descriptors.append(pollfd(fd: wakeEvent.rawValue, events: Int16(POLLIN), revents: 0))
      let timeout = backend.preparePoll(&descriptors)
      let ready = poll(&descriptors, nfds_t(descriptors.count), timeout)
      if ready < 0 && errno == EINTR { continue }
      if ready < 0 || descriptors[0].revents != 0 { return }
      if descriptors[1].revents != 0 { _ = try? wakeEvent.wait() }
      parkWhileHeld()
      backend.service(descriptors[2...])
      // One interrupt for every frame this round delivered.
      device?.finishReceiveBatch()
    }
  }

  private func parkWhileHeld() {
    pauseLock.withLock {
      guard held else { return }
      parked = true
      pauseLock.broadcast()
      pauseLock.wait { !held }
      parked = false
    }
  }

  /// Holds the thread between frames; returns once it is held (or has stopped).
  func pause() {
    pauseLock.withLock { held = true }
    wakeEvent.signal()
    pauseLock.withLock { pauseLock.wait { parked || thread == nil } }
  }

  /// Lets a held thread deliver frames again.
  func resume() {
    pauseLock.withLock {
      held = false
      pauseLock.broadcast()
    }
    wakeEvent.signal()
  }

  /// Stops the thread, waits for it, and closes the back end.
  func stop() {
    resume()
    stopEvent.signal()
    thread?.join()
    pauseLock.withLock {
      thread = nil
      pauseLock.broadcast()
    }
    backend.close()
  }
}
