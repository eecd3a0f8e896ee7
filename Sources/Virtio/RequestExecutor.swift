/// Where a device runs the slow part of its requests (disk I/O), so that several of them
/// are in flight at once. The VMM supplies a pool of OS threads; without one, requests run
/// on the thread that drained the queue.
public protocol RequestExecutor: Sendable {
  /// How many jobs run at once (a device splits a batch of requests into this many jobs).
  var parallelism: Int { get }
  /// Runs `work` soon, on some thread other than the caller's.
  func submit(_ work: @escaping @Sendable () -> Void)
}
