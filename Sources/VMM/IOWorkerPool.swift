import Virtio

/// A fixed set of OS threads that run block requests (host `pread`/`pwrite`/`fdatasync`
/// block, so they never run on Swift concurrency's pool). Devices submit one job per request.
final class IOWorkerPool: RequestExecutor, @unchecked Sendable {
  private let lock = ConditionLock()
  private var jobs: [@Sendable () -> Void] = []
  private var head = 0
  private var stopping = false
  /// Jobs taken by a worker and not yet finished.
  private var running = 0
  private var threads: [OSThread] = []
  /// Workers started (set once, at the end of init; `threads` empties on stop).
  private(set) var parallelism = 0

  /// Starts `count` workers named `name-N`; fewer if the system refuses threads (at least
  /// one is needed, else the initializer throws).
  init(count: Int, name: String) throws(KVMThreadError) {
    for index in 0..<count {
      do {
        threads.append(try OSThread(name: "\(name)\(index)") { [self] in work() })
      } catch {
        if threads.isEmpty { throw error }
        break
      }
    }
    parallelism = threads.count
  }

  func submit(_ work: @escaping @Sendable () -> Void) {
    lock.withLock {
      jobs.append(work)
      lock.signal()
    }
  }

  private func work() {
    while true {
      let job = lock.withLock { () -> (@Sendable () -> Void)? in
        lock.wait { head < jobs.count || stopping }
        guard head < jobs.count else { return nil }
        let job = jobs[head]
        head += 1
        if head == jobs.count {
          jobs.removeAll(keepingCapacity: true)
          head = 0
        }
        running += 1
        return job
      }
      guard let job else { return }
      job()
      lock.withLock {
        running -= 1
        if running == 0 && head == jobs.count { lock.broadcast() }
      }
    }
  }

  /// Waits until every job submitted so far has run to its end (used when the machine is
  /// quiesced: the submitters are held first, so none come after).
  func waitUntilIdle() {
    lock.withLock { lock.wait { head == jobs.count && running == 0 } }
  }

  /// Runs what was submitted, then stops and joins every worker.
  func stop() {
    lock.withLock {
      stopping = true
      lock.broadcast()
    }
    for thread in threads { thread.join() }
    threads = []
  }
}
