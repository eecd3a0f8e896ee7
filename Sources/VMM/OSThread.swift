import CKVM
import Glibc

/// A plain POSIX thread, for work that blocks in the kernel (a vCPU in `KVM_RUN`)
/// and so must never run on Swift concurrency's cooperative pool.
public final class OSThread: @unchecked Sendable {
  /// The POSIX thread.
  public private(set) var handle: pthread_t
  private var joined = false

  private final class Payload {
    let body: @Sendable () -> Void
    let name: String
    init(body: @escaping @Sendable () -> Void, name: String) {
      self.body = body
      self.name = name
    }
  }

  /// Starts `body` on a new thread named `name` (at most 15 characters are kept).
  public init(name: String, _ body: @escaping @Sendable () -> Void) throws(KVMThreadError) {
    let payload = Unmanaged.passRetained(Payload(body: body, name: name)).toOpaque()
    var thread = pthread_t()
    let result = pthread_create(
      &thread, nil,
      { argument in
        guard let argument else { return nil }
        let payload = Unmanaged<Payload>.fromOpaque(argument).takeRetainedValue()
        _ = ckvm_set_thread_name(String(payload.name.utf8.prefix(15)) ?? "vcpu")
        payload.body()
        return nil
      }, payload)
    if result != 0 {
      Unmanaged<Payload>.fromOpaque(payload).release()
      throw KVMThreadError(name: name, code: result)
    }
    handle = thread
  }

  deinit {
    // A thread nobody joins must not stay a zombie.
    if !joined { pthread_detach(handle) }
  }

  /// Waits for the thread to finish.
  public func join() {
    pthread_join(handle, nil)
    joined = true
  }

  /// Sends `signal` to the thread.
  public func signal(_ signal: Int32) {
    pthread_kill(handle, signal)
  }
}

/// A thread could not be started.
public struct KVMThreadError: Error, CustomStringConvertible {
  public let name: String
  public let code: Int32
  public var description: String { "could not start thread \(name): \(String(cString: strerror(code)))" }
}

/// A mutex with a condition variable, for threads that wait for a state change.
public final class ConditionLock: @unchecked Sendable {
  // Heap-allocated so their addresses never move.
  private let mutex = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
  private let condition = UnsafeMutablePointer<pthread_cond_t>.allocate(capacity: 1)

  public init() {
    pthread_mutex_init(mutex, nil)
    var attributes = pthread_condattr_t()
    pthread_condattr_init(&attributes)
    pthread_condattr_setclock(&attributes, CLOCK_MONOTONIC)
    pthread_cond_init(condition, &attributes)
    pthread_condattr_destroy(&attributes)
  }

  deinit {
    pthread_cond_destroy(condition)
    pthread_mutex_destroy(mutex)
    condition.deallocate()
    mutex.deallocate()
  }

  /// Runs `body` holding the lock.
  public func withLock<T, E: Error>(_ body: () throws(E) -> T) throws(E) -> T {
    pthread_mutex_lock(mutex)
    defer { pthread_mutex_unlock(mutex) }
    return try body()
  }

  /// With the lock held: waits until `done()` is true (re-checked after every broadcast).
  public func wait(until done: () -> Bool) {
    while !done() { pthread_cond_wait(condition, mutex) }
  }

  /// With the lock held: waits until `done()` is true or `seconds` have passed; returns `done()`.
  public func wait(seconds: Double, until done: () -> Bool) -> Bool {
    var deadline = timespec()
    clock_gettime(CLOCK_MONOTONIC, &deadline)
    let total = Int(deadline.tv_nsec) + Int(max(0, seconds) * 1e9)
    deadline.tv_sec += total / 1_000_000_000
    deadline.tv_nsec = total % 1_000_000_000
    while !done() {
      if pthread_cond_timedwait(condition, mutex, &deadline) == ETIMEDOUT { return done() }
    }
    return true
  }

  /// With the lock held: wakes every waiter.
  public func broadcast() { pthread_cond_broadcast(condition) }

  /// With the lock held: wakes one waiter.
  public func signal() { pthread_cond_signal(condition) }
}

/// A one-shot event a thread can wait for.
final class OneShotEvent: @unchecked Sendable {
  private let lock = ConditionLock()
  private var fired = false

  func fire() {
    lock.withLock {
      fired = true
      lock.broadcast()
    }
  }

  func wait() {
    lock.withLock { lock.wait { fired } }
  }
}
