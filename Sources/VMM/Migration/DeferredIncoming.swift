/// The destination of `skvm run --incoming defer`: no listener until QMP `migrate-incoming`
/// names where (as QEMU's `-incoming defer`), so a management tool can set the destination up
/// first and pick the port later. The main thread waits in `waitForListener()`; the monitor
/// calls `listen(on:)` once, or `quit()`.
public final class DeferredIncoming: @unchecked Sendable {
  private let lock = ConditionLock()
  private var listener: IncomingMigration?
  private var quitting = false
  private var currentStatus = MigrationStatus.none
  private var observers: [@Sendable (MigrationStatus) -> Void] = []

  public init() {}

  /// The incoming migration's status, as the destination's `query-migrate` reports it:
  /// none until `migrate-incoming`, setup while listening, active once the source connected,
  /// then completed or failed.
  public var status: MigrationStatus { lock.withLock { currentStatus } }

  /// Where it listens, once it does.
  public var address: String? { lock.withLock { listener?.address } }

  /// Where it listens (QMP `query-migrate`'s `socket-address`), once it does.
  public var listening: MigrationAddress? { lock.withLock { listener?.listening } }

  /// Calls `observer` with each new status (the monitor's `MIGRATION` events).
  public func observe(_ observer: @escaping @Sendable (MigrationStatus) -> Void) {
    lock.withLock { observers.append(observer) }
  }

  /// Starts listening on `address`; fails if it cannot, or if it was already asked to.
  public func listen(on address: MigrationAddress) throws(VirtualMachineError) {
    try lock.withLock { () throws(VirtualMachineError) in
      guard !quitting else { throw .migration("skvm is quitting") }
      guard listener == nil else {
        throw .migration("The incoming migration has already been started (on \(listener?.address ?? ""))")
      }
      let opened = try IncomingMigration(address: address)
      opened.onConnected = { [weak self] in self?.setStatus(.active) }
      listener = opened
      lock.broadcast()
    }
    setStatus(.setup)
  }

  /// Gives up waiting (QMP `quit`): `waitForListener` returns nil, a migration in progress is cut.
  public func quit() {
    let open = lock.withLock { () -> IncomingMigration? in
      quitting = true
      lock.broadcast()
      return listener
    }
    open?.abort()
  }

  /// Whether `quit()` was called.
  public var hasQuit: Bool { lock.withLock { quitting } }

  /// Blocks until `listen(on:)` (the listener) or `quit()` (nil).
  public func waitForListener() -> IncomingMigration? {
    lock.withLock {
      lock.wait { listener != nil || quitting }
      return quitting ? nil : listener
    }
  }

  /// Records the outcome once the machine runs here (completed) or could not (failed).
  public func finish(succeeded: Bool) { setStatus(succeeded ? .completed : .failed) }

  private func setStatus(_ status: MigrationStatus) {
    let notify = lock.withLock { () -> [@Sendable (MigrationStatus) -> Void] in
      guard currentStatus != status else { return [] }
      currentStatus = status
      return observers
    }
    for observer in notify { observer(status) }
  }
}
