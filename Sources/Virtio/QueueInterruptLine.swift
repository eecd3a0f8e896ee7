import Synchronization

/// Where a virtio device raises its queues' interrupts: connected at activation, disconnected
/// at reset, raised from any thread.
///
/// The closure is kept inside a struct. Kept bare in a generic container
/// (`Mutex<@Sendable (Int) -> Void>`) and read with `withLock { $0 }`, Swift converts it to the
/// generic representation and back — wrapping it in one reabstraction thunk more each time —
/// and writes the wrapped value back through the `inout`: every interrupt then ran through all
/// the thunks of the ones before it, and a guest's block I/O slowed down for as long as it ran
/// (2× after ten thousand requests) while the wrappers piled up in memory.
public final class QueueInterruptLine: Sendable {
  private struct Handler: Sendable {
    let raise: @Sendable (Int) -> Void
  }

  private let handler = Mutex(Handler { _ in })

  public init() {}

  /// Interrupts go to `raise` from now on.
  public func connect(_ raise: @escaping @Sendable (Int) -> Void) { handler.withLock { $0 = Handler(raise: raise) } }

  /// Interrupts go nowhere from now on.
  public func disconnect() { connect { _ in } }

  /// Raises queue `queue`'s interrupt.
  public func raise(_ queue: Int) { handler.withLock { $0 }.raise(queue) }
}
