import DiskImage
import Glibc

#if canImport(FoundationEssentials)
  import FoundationEssentials
#else
  import Foundation
#endif

extension ManagedMachine {
  /// The parameters the next live migration uses (QMP `migrate-set-parameters`).
  public var migrationParameters: MigrationParameters {
    get { lock.withLock { state.migrationParameters } }
    set { lock.withLock { state.migrationParameters = newValue } }
  }

  /// Moves the running machine to `host`:`port`, where `skvm run --incoming tcp:…` listens
  /// (QMP `migrate` to `tcp:HOST:PORT`), while it runs: RAM in passes (each sending what the
  /// guest and skvm dirtied during the last) until the rest fits `downtime-limit`, then a
  /// short stop for the rest and the vCPUs' and devices' state; the disks' locks pass over
  /// (flushed first) and the destination takes over. Success leaves this machine stopped in
  /// `postmigrate`. Any failure — refused, cut, cancelled, a destination that could not
  /// start — leaves it as it was (running again if it ran), its disks locked again.
  public func migrate(to address: MigrationAddress) throws(VirtualMachineError) {
    try alone { () throws(VirtualMachineError) in try migrateAlone(to: address) }
  }

  /// Marks a migration as starting (status `setup`) before the thread that runs it does, so a
  /// `query-migrate` right after QMP `migrate` never sees the last one's outcome.
  public func announceMigration() {
    lock.withLock {
      state.migration = MigrationInfo(status: .setup)
      lock.broadcast()
    }
  }

  /// Cancels a live migration in progress (QMP `migrate_cancel`): the source runs on. The
  /// migration notices between two runs of pages and tells the destination; a connection
  /// stuck in a send is cut after three seconds.
  public func cancelMigration() {
    let channel = lock.withLock { () -> MigrationChannel? in
      guard [.setup, .active, .device].contains(state.migration.status) else { return nil }
      state.migrationCancelled = true
      return state.migrationChannel
    }
    guard let channel else { return }
    _ = try? OSThread(name: "migrate-cancel") { [self] in
      let ended = lock.withLock { lock.wait(seconds: 3) { state.migrationChannel !== channel } }
      if !ended { channel.shutDown() }
    }
  }

  private func migrateAlone(to address: MigrationAddress) throws(VirtualMachineError) {
    let current = machine
    guard !lock.withLock({ state.ended }) else { throw .migration("the machine has shut down") }
    let parameters = lock.withLock { () -> MigrationParameters in
      state.migrationCancelled = false
      return state.migrationParameters
    }
    let started = monotonicNanoseconds()
    func elapsed(since start: UInt64 = started) -> Double { Double(monotonicNanoseconds() &- start) / 1e6 }
    var info = MigrationInfo(status: .setup)
    info.ram = MigrationRAMStatistics()
    info.ram?.total = current.memory.totalSize
    setMigration(info, event: true)
    var wasRunning = !current.isPaused
    var paused = false
    var logging = false
    var disksReleased = false
    // The stop's events (STOP, MIGRATION device) go out once the state is on its way: the
    // monitor's writes are not the guest's pause. Sent before any failure's RESUME.
    var stopAnnounced = true
    func announceStop() {
      guard !stopAnnounced else { return }
      stopAnnounced = true
      if wasRunning { emit(.stopped) }
      emit(.migration(.device))
    }
    func fail(_ error: VirtualMachineError) -> VirtualMachineError {
      announceStop()
      let cancelled = lock.withLock { state.migrationCancelled }
      if logging { current.stopDirtyLogging() }
      var reason = error.description
      var resumable = true
      if disksReleased {
        let stuck = current.setDiskLocks(true)
        if !stuck.isEmpty {
          resumable = false
          reason +=
            "; the disks' locks could not be taken back (\(stuck.joined(separator: ", "))): the machine stays stopped"
        }
      }
      if paused && wasRunning && resumable {
        current.resume()
        emit(.resumed)
      }
      lock.withLock { state.migrationChannel = nil }
      info.status = cancelled ? .cancelled : .failed
      info.totalMilliseconds = elapsed()
      info.error = cancelled ? nil : reason
      setMigration(info, event: true)
      return .migration(reason)
    }
    if let obstacle = current.liveMigrationObstacle { throw fail(.migration(obstacle)) }
    let channel: MigrationChannel
    do throws(MigrationChannel.Failure) {
      channel = try Self.connect(to: address)
    } catch {
      throw fail(.migration(error.description))
    }
    lock.withLock { state.migrationChannel = channel }
    var whole = PhaseTrace("migration", enabledBy: "SKVM_TRACE_MIGRATION", start: started)
    defer { whole.print() }
    whole.mark("connected")
    let cancelled: () -> Bool = { [self] in lock.withLock { state.migrationCancelled } }
    do throws(VirtualMachineError) {
      try Self.hello(current, over: channel)
      info.setupMilliseconds = elapsed()
      whole.mark("accepted")
      try current.startDirtyLogging()
      logging = true
      whole.mark("logging")
      // The coders' first use costs milliseconds: paid now, not while the guest is stopped.
      current.warmUpStateCoding()
      whole.mark("coders warm")
      info.status = .active
      setMigration(info, event: true)
      var sender = MigrationPageSender(
        memory: current.memory, channel: channel, parameters: parameters, statistics: info.ram!, cancelled: cancelled)
      // Pass 1 sends everything; each later one what was dirtied during the one before. Pages
      // never written (holes in the memfd, asked after logging started) go as zeros unread.
      sender.unwritten = current.memory.unwrittenRanges()
      var pages = current.allPages
      var passPages = pages.count
      while true {
        emit(.migrationPass(sender.statistics.passes + 1))
        let passStart = monotonicNanoseconds()
        let before = sender.statistics.transferred
        try sender.send(pages)
        // Holes were holes only then: a page written since is dirty and must be read.
        sender.unwritten = []
        let seconds = max(Double(monotonicNanoseconds() &- passStart) / 1e9, 1e-6)
        whole.mark("pass \(sender.statistics.passes + 1)")
        pages = try current.takeDirtyPages()
        whole.mark("dirty log (\(pages.count))")
        let rate = Double(sender.statistics.transferred - before) / seconds
        sender.statistics.passes += 1
        sender.statistics.mbps = rate * 8 / 1e6
        sender.statistics.dirtyPagesRate = UInt64(Double(pages.count) / seconds)
        sender.statistics.remaining = UInt64(pages.count) * 4096
        sender.statistics.expectedDowntimeMilliseconds = Double(pages.count) * 4096 / max(rate, 1) * 1000
        info.ram = sender.statistics
        info.totalMilliseconds = elapsed()
        setMigration(info, event: false)
        // Done once the rest fits the limit — unless another pass is cheap and still shrinks
        // the rest well (to at most half): then the stop is shorter than the limit allows.
        let sent = passPages
        passPages = pages.count
        let fits = sender.statistics.expectedDowntimeMilliseconds <= Double(parameters.downtimeLimitMilliseconds)
        let worthAnotherPass = pages.count > Self.smallRemainder && pages.count * 2 <= sent
        let lastPass = sender.statistics.passes >= parameters.maximumPasses
        // A guest stopped meanwhile (QMP stop: the user's stop-and-copy) dirties nothing more.
        if current.isPaused || (fits && (!worthAnotherPass || lastPass)) { break }
        if lastPass {
          throw VirtualMachineError.migration(
            "the guest dirties RAM faster than it can be sent (\(sender.statistics.dirtyPagesRate) pages/s against \(Int(sender.statistics.mbps)) Mbit/s after \(sender.statistics.passes) passes): raise downtime-limit or max-bandwidth, or stop the guest (QMP stop) while it migrates to finish with a stop-and-copy"
          )
        }
      }
      // The destination stores what is in flight first (loopback and socket buffers hold
      // megabytes): the stop then waits only for the last pages.
      do throws(MigrationChannel.Failure) {
        try channel.send([MigrationKind.drain.rawValue])
        try Self.awaitAnswer(from: channel, success: .drained, what: "store the RAM sent")
      } catch {
        throw VirtualMachineError.migration(error.description)
      }
      whole.mark("drained")
      // The switch-over: stop, send the rest and the state, hand the disks over. The disks
      // are flushed once while the guest still runs, so the flush while it is stopped is short.
      // SKVM_TRACE_MIGRATION=1 prints where the stop's time goes, on standard error.
      current.flushDisks()
      let stopped = monotonicNanoseconds()
      var trace = PhaseTrace("migration switch-over", enabledBy: "SKVM_TRACE_MIGRATION", start: stopped)
      defer { trace.print() }
      wasRunning = !current.isPaused
      if wasRunning { current.pause() }
      paused = true
      stopAnnounced = false
      info.status = .device
      setMigration(info, event: false)
      trace.mark("paused")
      try sender.send(pages + (try current.takeDirtyPages()))
      trace.mark("last pages")
      // The disks are flushed and let go of first (the guest is stopped: nothing writes them
      // any more): the destination opens and locks them while this side reads and sends the state.
      disksReleased = true
      let stuck = current.setDiskLocks(false)
      guard stuck.isEmpty else {
        throw VirtualMachineError.migration("cannot release \(stuck.joined(separator: ", "))")
      }
      do throws(MigrationChannel.Failure) { try channel.send([MigrationKind.disksReleased.rawValue]) } catch {
        throw VirtualMachineError.migration(error.description)
      }
      trace.mark("disks released")
      let captured = try current.captureState()
      trace.mark("state read")
      let saved = try captured.json()
      trace.mark("state encoded")

      var message = MigrationMessage(.state)
      message.put32(UInt32(saved.record.count))
      message.put32(UInt32(saved.devices.count))
      do throws(MigrationChannel.Failure) {
        try channel.send(message.bytes + saved.record + saved.devices)
        sender.statistics.transferred += UInt64(message.bytes.count + saved.record.count + saved.devices.count)
        trace.mark("state sent")
        announceStop()
        // The destination runs the guest if it ran here, and keeps it paused if it was.
        try channel.send([MigrationKind.complete.rawValue, wasRunning ? 1 : 0])
        try Self.awaitAnswer(from: channel, success: .running, what: "start the machine")
        trace.mark("destination running")
        whole.mark("switch-over")
      } catch {
        throw VirtualMachineError.migration(error.description)
      }
      // The migration ends here, as QEMU counts it: the destination runs. Logging stops after
      // (a slot change waits for an SRCU grace period: milliseconds on some hosts).
      info.totalMilliseconds = elapsed()
      info.downtimeMilliseconds = wasRunning ? elapsed(since: stopped) : 0
      lock.withLock {
        state.postmigrate = true
        state.migrationChannel = nil
      }
      sender.statistics.remaining = 0
      info.ram = sender.statistics
      info.status = .completed
      info.ramBytes = current.memory.totalSize
      info.fileBytes = sender.statistics.transferred
      setMigration(info, event: true)
      current.stopDirtyLogging()
      logging = false
      whole.mark("logging stopped")
    } catch {
      if lock.withLock({ state.migrationCancelled }) { try? channel.send([MigrationKind.cancel.rawValue]) }
      throw fail(error)
    }
  }

  /// Pages left over that are not worth another pass (1 MiB: a millisecond or two of stop).
  static let smallRemainder = 256

  /// Connects to the destination (10 s at most).
  private static func connect(to address: MigrationAddress) throws(MigrationChannel.Failure) -> MigrationChannel {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
    guard fd >= 0 else { throw MigrationChannel.Failure("no socket: \(String(cString: strerror(errno)))") }
    let channel = MigrationChannel(fd: fd, peer: "the destination \(address)", timeoutSeconds: 10)
    guard address.withSocketAddress({ Glibc.connect(fd, $0, $1) == 0 }) else {
      throw MigrationChannel.Failure(
        "cannot connect to \(address): \(MigrationChannel.errorText()) (is skvm run --incoming tcp:\(address) listening there?)"
      )
    }
    channel.setTimeout(seconds: 60)
    return channel
  }

  /// Greets the destination with the configuration and RAM map and waits for it to accept.
  private static func hello(_ machine: VirtualMachine, over channel: MigrationChannel) throws(VirtualMachineError) {
    var message = MigrationMessage(.hello)
    message.bytes = MigrationKind.magic
    message.put32(MigrationKind.formatVersion)
    do {
      message.putText(Array(try JSONEncoder().encode(machine.configuration)))
    } catch {
      throw .migration("the configuration cannot be encoded: \(error)")
    }
    message.put32(UInt32(machine.memory.regions.count))
    for region in machine.memory.regions.sorted(by: { $0.guestAddress < $1.guestAddress }) {
      message.put64(region.guestAddress)
      message.put64(region.size)
    }
    // Each disk's format and virtual size: the destination checks its image at that path is
    // the same before any RAM moves.
    for disk in machine.configuration.disks {
      let info = try? ImageInfo.read(disk.path, format: disk.format, forceShare: true)
      message.putText(Array((info?.format.rawValue ?? "unknown").utf8))
      message.put64(info?.virtualSize ?? 0)
    }
    do throws(MigrationChannel.Failure) {
      try channel.send(message.bytes)
      try awaitAnswer(from: channel, success: .accepted, what: "accept the machine")
    } catch {
      throw .migration(error.description)
    }
  }

  /// Reads the destination's answer: `success`, or its reason for failing.
  private static func awaitAnswer(from channel: MigrationChannel, success: MigrationKind, what: String)
    throws(MigrationChannel.Failure)
  {
    let kind = try channel.receiveByte()
    if kind == success.rawValue { return }
    guard kind == MigrationKind.failed.rawValue || kind == MigrationKind.refused.rawValue else {
      throw MigrationChannel.Failure("\(channel.peer) answered 0x\(String(kind, radix: 16)): not an skvm destination")
    }
    let reason = try channel.receive(Int(try channel.receive32()), limit: 4096, what: "a reason")
    throw MigrationChannel.Failure(
      "\(channel.peer) could not \(what): \(String(decoding: reason, as: UTF8.self))")
  }
}
