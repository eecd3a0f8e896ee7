import Glibc
import KVM
import Network
import Virtio

/// The receive side of one NIC's queue pair, on a host thread of its own: polls the back end (a tap's
/// descriptor, libslirp's sockets and timers) and hands what arrives to the virtio-net
/// device. It sleeps in poll(2) when there is nothing to do, and while the guest has posted
/// no receive buffers it polls only for the driver's kick (no busy loop).
final class NetworkPump: @unchecked Sendable {
  private let backend: any NetworkBackend
  private weak var device: VirtioNet?
  /// The queue pair served (its queues are 2 × pair and 2 × pair + 1).
  private let pair: Int
  private let stopEvent: EventFD
  /// Wakes the thread: buffers posted, the back end has work, or a pause was asked for.
  private let wakeEvent: EventFD
  private let gate = ParkingGate()
  private var thread: OSThread?

  /// The kernel data plane, if the NIC has one: while it runs, the pump relays its call
  /// eventfds to the device's interrupts; while it does not, the pump serves the rings' kicks.
  private let vhost: VhostNet?

  /// Connects the back end of `device`'s queue pair `pair` to it and starts the thread; nil
  /// if no thread could start.
  init?(device: VirtioNet, pair: Int = 0, name: String, vhost: VhostNet? = nil) {
    backend = device.backends[pair]
    self.pair = pair
    self.vhost = vhost
    do {
      stopEvent = try EventFD()
      wakeEvent = try EventFD()
    } catch {
      return nil
    }
    let wake = wakeEvent
    backend.attach(
      deliver: { [weak device] frame in device?.receive(frame, pair: pair, batched: true) ?? true },
      wake: { wake.signal() })
    device.onReceiveRoom(pair: pair) { wake.signal() }
    vhost?.wake = { wake.signal() }
    self.device = device
    thread = try? OSThread(name: name) { [self] in
      serve()
      gate.markEnded()  // a pause never waits for a thread that is gone
    }
    if thread == nil { return nil }
  }

  private func serve() {
    var descriptors: [pollfd] = []
    while true {
      descriptors.removeAll(keepingCapacity: true)
      descriptors.append(pollfd(fd: stopEvent.rawValue, events: Int16(POLLIN), revents: 0))
      descriptors.append(pollfd(fd: wakeEvent.rawValue, events: Int16(POLLIN), revents: 0))
      let offloaded = vhost?.isRunning ?? false
      var timeout: Int32 = -1
      if let vhost, offloaded {
        for event in vhost.calls + vhost.errors {
          descriptors.append(pollfd(fd: event.rawValue, events: Int16(POLLIN), revents: 0))
        }
      } else {
        timeout = backend.preparePoll(&descriptors)
        for kick in vhost?.kicks ?? [] {
          descriptors.append(pollfd(fd: kick.rawValue, events: Int16(POLLIN), revents: 0))
        }
      }
      let ready = poll(&descriptors, nfds_t(descriptors.count), timeout)
      if ready < 0 && errno == EINTR { continue }
      if ready < 0 || descriptors[0].revents != 0 { return }
      if descriptors[1].revents != 0 { _ = try? wakeEvent.wait() }
      if let vhost, offloaded {
        // Interrupts the kernel asked for go out before a pause parks the thread.
        for (queue, call) in vhost.calls.enumerated() where descriptors[2 + queue].revents != 0 {
          _ = try? call.wait()
          device?.raiseInterrupt(queue: 2 * pair + queue)
        }
        // A ring the kernel gave up on (descriptors outside RAM, a loop): DEVICE_NEEDS_RESET,
        // as skvm's own data path does.
        for (queue, error) in vhost.errors.enumerated() where descriptors[2 + vhost.calls.count + queue].revents != 0 {
          _ = try? error.wait()
          device?.queueBroken()
        }
        gate.parkWhileHeld()
        continue
      }
      gate.parkWhileHeld()
      let kicks = vhost?.kicks.count ?? 0
      backend.service(descriptors[2..<descriptors.count - kicks])
      if let vhost, let device {
        for (queue, kick) in vhost.kicks.enumerated() where descriptors[descriptors.count - kicks + queue].revents != 0
        {
          _ = try? kick.wait()
          if !device.notify(queue: 2 * pair + queue, onIOThread: true) { device.queueBroken() }
        }
      }
      // One interrupt for every frame this round delivered.
      device?.finishReceiveBatch(pair: pair)
    }
  }

  /// Holds the thread between frames; returns once it is held (or has stopped).
  func pause() {
    gate.hold { wakeEvent.signal() }
  }

  /// Lets a held thread deliver frames again.
  func resume() {
    gate.release()
    wakeEvent.signal()
  }

  /// Stops the thread, waits for it, and closes the back end.
  func stop() {
    resume()
    stopEvent.signal()
    thread?.join()
    thread = nil
    gate.markEnded()
    backend.close()
  }
}
