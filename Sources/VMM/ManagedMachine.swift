import Devices
import Glibc
import KVM
import Synchronization

/// Why a managed machine stopped for good, in QEMU's terms (QAPI `ShutdownCause`), so a
/// QMP `SHUTDOWN` event reads the same as QEMU's.
public enum ShutdownCause: String, Sendable, Codable {
  case hostError = "host-error"
  case hostQMPQuit = "host-qmp-quit"
  case hostQMPSystemReset = "host-qmp-system-reset"
  case hostSignal = "host-signal"
  case hostUI = "host-ui"
  case guestShutdown = "guest-shutdown"
  case guestReset = "guest-reset"
  case guestPanic = "guest-panic"

  /// True when the guest asked for it.
  public var byGuest: Bool { rawValue.hasPrefix("guest-") }
}

/// Something that happened to a managed machine: what a monitor reports as an event.
public enum MachineEvent: Sendable, Equatable {
  /// The vCPUs were paused (QMP `STOP`).
  case stopped
  /// The vCPUs run again (QMP `RESUME`).
  case resumed
  /// The machine was reset to its power-on state (QMP `RESET`).
  case reset(ShutdownCause)
  /// The ACPI power button was pressed (QMP `POWERDOWN`).
  case powerdown
  /// The machine stopped for good (QMP `SHUTDOWN`).
  case shutdown(ShutdownCause)
  /// A migration (or a save to a snapshot file) changed status (QMP `MIGRATION`).
  case migration(MigrationStatus)
  /// A live migration began pass `pass` over RAM (1: everything; later: what was dirtied
  /// meanwhile) (QMP `MIGRATION_PASS`).
  case migrationPass(Int)
  /// A background job changed status (QMP `JOB_STATUS_CHANGE`).
  case job(id: String, status: String)
}

/// Where a migration or snapshot save is, with QEMU's names (QAPI `MigrationStatus`).
public enum MigrationStatus: String, Sendable, Codable {
  case none, setup, active, device, completed, failed, cancelled
  case cancelling
}

/// What `query-migrate` reports of the last migration or snapshot save.
public struct MigrationInfo: Sendable, Equatable {
  public var status: MigrationStatus = .none
  /// Milliseconds from start to end (so far, while active).
  public var totalMilliseconds: Double = 0
  /// Milliseconds the guest was stopped for it.
  public var downtimeMilliseconds: Double = 0
  /// Bytes of guest RAM and of the whole file.
  public var ramBytes: UInt64 = 0
  public var fileBytes: UInt64 = 0
  /// Why it failed, when it did.
  public var error: String?
  /// A live migration's RAM figures (nil for a save to a file).
  public var ram: MigrationRAMStatistics?
  /// Milliseconds from start until RAM began to move (connecting, the destination's checks).
  public var setupMilliseconds: Double = 0
}

/// Where a managed machine is in its life, with QEMU's names (QAPI `RunState`).
public enum MachineRunState: String, Sendable {
  case running
  case paused
  case shutdown
  /// Stopped after its state was saved to a snapshot file (or migrated); `cont` runs it on.
  case postmigrate
}

/// A machine under management: the lifecycle a monitor drives on top of `VirtualMachine`.
///
/// It runs one `VirtualMachine` at a time from one configuration. A host reset
/// (`reset()`) stops it and builds a fresh one — vCPUs, in-kernel irqchip and PIT,
/// devices and RAM all back to their power-on state — which boots the guest again,
/// paused if the old one was. Every change of state is reported to event listeners.
///
/// Host requests (pause, resume, reset, power button, quit, reading vCPU state) are
/// serialised: each runs to completion before the next starts, whichever thread or
/// monitor client it comes from, so no interleaving of requests can act on a machine
/// that is being torn down or rebuilt.
///
/// ```swift
/// let managed = try ManagedMachine(configuration: configuration)
/// managed.addEventListener { print($0) }
/// let exit = try managed.run()   // until the guest powers off or the host quits
/// ```
public final class ManagedMachine: @unchecked Sendable {
  /// The configuration every incarnation of the machine is built from.
  public let configuration: VirtualMachineConfiguration
  private let console: any ConsoleOutput
  private let kvmPath: String

  /// Held for the whole of each host request: requests run one at a time.
  let requests = ConditionLock()
  /// Guards `state`; the run loop takes only this one.
  let lock = ConditionLock()
  var state: State
  private let listeners = Mutex<[@Sendable (MachineEvent) -> Void]>([])

  struct State {
    var machine: VirtualMachine
    /// Incremented each time a fresh machine replaces the old one.
    var generation = 0
    var resetRequested = false
    var hostCause: ShutdownCause?
    var ended = false
    var running = false
    var postmigrate = false
    var migration = MigrationInfo()
    /// The live migration's connection while one runs (a cancel shuts it down).
    var migrationChannel: MigrationChannel?
    var migrationCancelled = false
    var migrationParameters = MigrationParameters()
    /// With a reset: build the fresh machine from this snapshot (`loadvm`) rather than boot it.
    var pendingRestore: (snapshot: SnapshotFile, resume: Bool)?
    /// Why the last `loadvm` could not restore its snapshot (the machine was rebooted instead).
    var restoreFailure: VirtualMachineError?
  }

  /// Builds the first incarnation; fails as `VirtualMachine.init` does.
  public init(
    configuration: VirtualMachineConfiguration, console: any ConsoleOutput = FileDescriptorConsoleOutput(),
    kvmPath: String = "/dev/kvm"
  ) throws(VirtualMachineError) {
    self.configuration = configuration
    self.console = console
    self.kvmPath = kvmPath
    state = State(machine: try VirtualMachine(configuration: configuration, console: console, kvmPath: kvmPath))
  }

  /// Builds the first incarnation from internal snapshot `name` of its qcow2 disks
  /// (`-loadvm`): the disks are reverted to it and the machine continues where it was saved.
  public init(
    configuration: VirtualMachineConfiguration, loadingSnapshot name: String,
    console: any ConsoleOutput = FileDescriptorConsoleOutput(), kvmPath: String = "/dev/kvm"
  ) throws(VirtualMachineError) {
    let (snapshot, disks, backing) = try VirtualMachine.revertDisks(of: configuration, toSnapshot: name)
    self.configuration = configuration
    self.console = console
    self.kvmPath = kvmPath
    state = State(
      machine: try VirtualMachine(
        restoring: snapshot, configuration: configuration, console: console, kvmPath: kvmPath, disks: disks,
        backing: backing))
  }

  /// Builds the first incarnation from a snapshot file (`--incoming file:`); it continues
  /// where it was saved when run. Later resets boot `configuration` afresh.
  /// `prepared`: what an incoming migration built and opened ahead, each part used if it fits.
  public init(
    restoring snapshot: SnapshotFile, configuration: VirtualMachineConfiguration,
    console: any ConsoleOutput = FileDescriptorConsoleOutput(), kvmPath: String = "/dev/kvm",
    mode: RestoreMode = .mapped, prepared: IncomingMachineParts? = nil
  ) throws(VirtualMachineError) {
    self.configuration = configuration
    self.console = console
    self.kvmPath = kvmPath
    state = State(
      machine: try VirtualMachine(
        restoring: snapshot, configuration: configuration, console: console, kvmPath: kvmPath, mode: mode,
        prepared: prepared))
  }

  /// The current incarnation (a new one after each reset).
  public var machine: VirtualMachine { lock.withLock { state.machine } }

  /// The host's reason for stopping the machine for good, once it has given one.
  public var stopCause: ShutdownCause? { lock.withLock { state.hostCause } }

  /// Running, paused, or shut down.
  public var runState: MachineRunState {
    lock.withLock {
      if state.ended { return .shutdown }
      guard state.machine.isPaused else { return .running }
      return state.postmigrate ? .postmigrate : .paused
    }
  }

  /// The last migration or snapshot save, as `query-migrate` reports it.
  public var migration: MigrationInfo { lock.withLock { state.migration } }

  /// Calls `listener` for every later event, on the thread that caused it. Keep it short.
  public func addEventListener(_ listener: @escaping @Sendable (MachineEvent) -> Void) {
    listeners.withLock { $0.append(listener) }
  }

  /// Sends `event` to every listener (for the layers above, e.g. a monitor's job events).
  public func post(_ event: MachineEvent) { emit(event) }

  func emit(_ event: MachineEvent) {
    for listener in listeners.withLock({ $0 }) { listener(event) }
  }

  /// Runs incarnations until one ends for a reason other than a host reset; returns that reason.
  /// `whenStarted` runs once, on this thread, as soon as the first incarnation's vCPUs have
  /// been started (host-side set-up that need not delay the guest: an input thread).
  public func run(whenStarted: (() -> Void)? = nil) throws(VirtualMachineError) -> VirtualMachineExit {
    var whenStarted = whenStarted
    lock.withLock { state.running = true }
    defer {
      lock.withLock {
        state.running = false
        lock.broadcast()
      }
    }
    while true {
      let current = machine
      let exit = try current.run(whenStarted: whenStarted)
      whenStarted = nil
      // A PC's own reset (the guest's reboot, Ctrl-Alt-Del) goes back through its firmware; a
      // directly booted kernel's ends the run, as QEMU's -no-reboot does.
      var guestReboot = false
      if case .reset = exit, configuration.boot.rebootsThroughFirmware { guestReboot = true }
      let resetting = lock.withLock { () -> Bool in
        defer { state.resetRequested = false }
        return (state.resetRequested || guestReboot) && !state.ended && state.hostCause == nil
      }
      guard resetting else {
        let cause = lock.withLock { () -> ShutdownCause? in
          state.ended = true
          lock.broadcast()
          return state.hostCause
        }
        emit(.shutdown(Self.cause(of: exit, host: cause)))
        return exit
      }
      current.releaseDisks()
      let restore = lock.withLock { () -> (snapshot: SnapshotFile, resume: Bool)? in
        defer { state.pendingRestore = nil }
        return state.pendingRestore
      }
      var fresh: VirtualMachine?
      if let restore {
        do {
          fresh = try VirtualMachine(
            restoring: restore.snapshot, configuration: configuration, console: console, kvmPath: kvmPath)
          if !restore.resume { fresh?.pause() }
        } catch {
          lock.withLock { state.restoreFailure = error }
        }
      }
      do {
        if fresh == nil {
          fresh = try VirtualMachine(configuration: configuration, console: console, kvmPath: kvmPath)
          if current.isPaused || restore != nil { fresh?.pause() }
        }
      } catch {
        lock.withLock {
          state.ended = true
          lock.broadcast()
        }
        emit(.shutdown(.hostError))
        throw error
      }
      guard let fresh else { continue }
      // A quit or another reset asked for while this one was being built applies to the fresh machine.
      let again = lock.withLock { () -> Bool in
        state.machine = fresh
        state.generation += 1
        lock.broadcast()
        return state.resetRequested || state.hostCause != nil
      }
      if restore == nil { emit(.reset(guestReboot ? .guestReset : .hostQMPSystemReset)) }
      if again { fresh.stop(reason: "stopped while it was being reset") }
    }
  }

  /// Runs `body` as one host request: alone, with the machine as it is now.
  private func request<T>(_ body: (VirtualMachine) throws -> T) rethrows -> T {
    try requests.withLock { try body(machine) }
  }

  /// Pauses every vCPU (QMP `stop`); returns once they are all out of the guest.
  public func pause() {
    request { current in
      guard !current.isPaused, !lock.withLock({ state.ended }) else { return }
      current.pause()
      emit(.stopped)
    }
  }

  /// Resumes the vCPUs (QMP `cont`).
  public func resume() {
    request { current in
      guard current.isPaused, !lock.withLock({ state.ended }) else { return }
      lock.withLock { state.postmigrate = false }
      current.resume()
      emit(.resumed)
    }
  }

  /// Saves the machine to a snapshot file (QMP `migrate` to `file:PATH`): pauses it if it
  /// runs, writes the file, and leaves it stopped in `postmigrate` (as QEMU does; `cont` runs
  /// it on). Reports `MIGRATION` events as it goes; on failure the machine runs on as before.
  public func saveSnapshot(to path: String) throws(VirtualMachineError) {
    var failure: VirtualMachineError?
    requests.withLock {
      do throws(VirtualMachineError) { try saveSnapshotAlone(to: path) } catch { failure = error }
    }
    if let failure { throw failure }
  }

  /// `saveSnapshot` with the request lock held.
  private func saveSnapshotAlone(to path: String) throws(VirtualMachineError) {
    do {
      let current = machine
      guard !lock.withLock({ state.ended }) else { throw .snapshot("the machine has shut down") }
      let started = monotonicNanoseconds()
      setMigration(MigrationInfo(status: .setup), event: true)
      let wasRunning = !current.isPaused
      if wasRunning {
        current.pause()
        emit(.stopped)
      }
      setMigration(MigrationInfo(status: .active), event: true)
      do throws(VirtualMachineError) {
        try current.saveSnapshot(to: path)
      } catch {
        let elapsed = Double(monotonicNanoseconds() &- started) / 1e6
        setMigration(
          MigrationInfo(status: .failed, totalMilliseconds: elapsed, error: error.description), event: true)
        if wasRunning {
          current.resume()
          emit(.resumed)
        }
        throw error
      }
      let elapsed = Double(monotonicNanoseconds() &- started) / 1e6
      var status = stat()
      let fileBytes = stat(path, &status) == 0 ? UInt64(status.st_size) : 0
      lock.withLock { state.postmigrate = true }
      setMigration(
        MigrationInfo(
          status: .completed, totalMilliseconds: elapsed, downtimeMilliseconds: wasRunning ? elapsed : 0,
          ramBytes: current.memory.totalSize, fileBytes: fileBytes), event: true)
    }
  }

  // MARK: Internal snapshots

  /// `savevm NAME`: pauses the machine if it runs, saves it as snapshot NAME of its qcow2
  /// disks (the state in the first one's VM state area), and lets it run on as it was.
  public func saveInternalSnapshot(named name: String) throws(VirtualMachineError) {
    try alone { () throws(VirtualMachineError) in
      let current = machine
      let wasRunning = !current.isPaused
      if wasRunning {
        current.pause()
        emit(.stopped)
      }
      defer {
        if wasRunning {
          current.resume()
          emit(.resumed)
        }
      }
      try current.saveInternalSnapshot(named: name)
    }
  }

  /// `loadvm NAME`: reverts the disks to snapshot NAME and replaces the machine with the one
  /// saved there, running if this one ran. If the saved machine cannot be rebuilt (it was saved
  /// with other devices, say), the machine boots afresh, paused, and the error says why.
  public func loadInternalSnapshot(named name: String) throws(VirtualMachineError) {
    try alone { () throws(VirtualMachineError) in
      let current = machine
      let wasRunning = !current.isPaused
      if wasRunning {
        current.pause()
        emit(.stopped)
      }
      let snapshot: SnapshotFile
      do throws(VirtualMachineError) {
        snapshot = try current.revertDisks(toSnapshot: name)
      } catch {
        if wasRunning {
          current.resume()
          emit(.resumed)
        }
        throw error
      }
      let (generation, running) = lock.withLock { () -> (Int, Bool) in
        state.pendingRestore = (snapshot, wasRunning)
        state.restoreFailure = nil
        state.resetRequested = !state.ended
        return (state.generation, state.running)
      }
      current.stop(reason: "loadvm \(name)")
      guard running else { return }
      let failure = lock.withLock { () -> VirtualMachineError? in
        lock.wait { state.generation != generation || state.ended || !state.running }
        return state.restoreFailure
      }
      if let failure { throw failure }
      if wasRunning { emit(.resumed) }
    }
  }

  /// `delvm NAME`.
  public func deleteInternalSnapshot(named name: String) throws(VirtualMachineError) {
    try alone { () throws(VirtualMachineError) in try machine.deleteInternalSnapshot(named: name) }
  }

  /// `info snapshots`.
  public func internalSnapshots() throws(VirtualMachineError) -> [VirtualMachine.InternalSnapshot] {
    var result: [VirtualMachine.InternalSnapshot] = []
    try alone { () throws(VirtualMachineError) in result = try machine.internalSnapshots() }
    return result
  }

  /// Runs `body` as one host request, with typed errors.
  func alone(_ body: () throws(VirtualMachineError) -> Void) throws(VirtualMachineError) {
    var failure: VirtualMachineError?
    requests.withLock {
      do throws(VirtualMachineError) { try body() } catch { failure = error }
    }
    if let failure { throw failure }
  }

  func setMigration(_ info: MigrationInfo, event: Bool) {
    lock.withLock {
      state.migration = info
      lock.broadcast()
    }
    if event { emit(.migration(info.status)) }
  }

  /// Resets the machine to its power-on state; the guest boots again (QMP `system_reset`).
  /// Returns once the fresh machine is in place (or the machine has ended), so the next
  /// request acts on the fresh one.
  public func reset() {
    request { current in
      let (generation, running) = lock.withLock { () -> (Int, Bool) in
        state.resetRequested = !state.ended
        return (state.generation, state.running)
      }
      current.stop(reason: "system_reset")
      guard running else { return }
      lock.withLock { lock.wait { state.generation != generation || state.ended || !state.running } }
    }
  }

  /// Presses the ACPI power button (QMP `system_powerdown`); the guest decides what to do.
  public func pressPowerButton() {
    request { current in
      guard !lock.withLock({ state.ended }) else { return }
      current.pressPowerButton()
      emit(.powerdown)
    }
  }

  /// Stops the machine for good on the host's behalf (QMP `quit`, a signal, the console's escape key).
  /// Never waits for other requests (a signal or quit always gets through), only for a snapshot
  /// being written to be complete.
  public func stop(cause: ShutdownCause, reason: String) {
    let current = lock.withLock { () -> VirtualMachine in
      // A snapshot being written is finished first (it takes milliseconds to seconds): quit
      // right after migrate must not leave half a file. A live migration is cancelled.
      if let channel = state.migrationChannel {
        state.migrationCancelled = true
        channel.shutDown()
      }
      _ = lock.wait(seconds: 60) { ![.setup, .active, .device].contains(state.migration.status) }
      if state.hostCause == nil { state.hostCause = cause }
      state.resetRequested = false
      return state.machine
    }
    current.stop(reason: reason)
  }

  /// Runs `body` with every vCPU of the current incarnation parked (QMP/HMP register dumps).
  public func withVCPUsParked<T>(_ body: ([KVMVCPU]) throws -> T) rethrows -> T {
    try request { current in try current.withVCPUsParked(body) }
  }

  /// Hands console input to the current incarnation's console device; returns how many bytes it took.
  public func receiveConsoleInput(_ bytes: ArraySlice<UInt8>) -> Int {
    machine.receiveConsoleInput(bytes)
  }

  private static func cause(of exit: VirtualMachineExit, host: ShutdownCause?) -> ShutdownCause {
    switch exit {
    case .powerOff, .debugExit: .guestShutdown
    case .reset: .guestReset
    case .guestPanicked: .guestPanic
    case .stoppedByHost: host ?? .hostSignal
    case .guestFault, .vmmFailure: .hostError
    }
  }
}
