/// The pause handshake of a device's service thread (a queue notifier, a network pump): the
/// machine asks for a hold and waits until the thread has parked at a safe point (between
/// kicks, between frames), where it touches neither guest memory nor device state.
final class ParkingGate: @unchecked Sendable {
  private let lock = ConditionLock()
  /// Guarded by `lock`: a hold is asked for; the thread is parked; the thread has ended.
  private var held = false
  private var parked = false
  private var ended = false

  /// Called by the thread at a safe point: parks while a hold is asked for.
  func parkWhileHeld() {
    lock.withLock {
      guard held else { return }
      parked = true
      lock.broadcast()
      lock.wait { !held }
      parked = false
    }
  }

  /// Asks for a hold, wakes the thread with `wake`, and returns once it is parked (or has ended).
  func hold(wake: () -> Void) {
    lock.withLock { held = true }
    wake()
    lock.withLock { lock.wait { parked || ended } }
  }

  /// Lets a parked thread go on.
  func release() {
    lock.withLock {
      held = false
      lock.broadcast()
    }
  }

  /// The thread has ended (or never started): holds return at once from now on.
  func markEnded() {
    lock.withLock {
      ended = true
      lock.broadcast()
    }
  }
}
