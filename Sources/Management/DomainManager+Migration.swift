import DomainXML
import Foundation
import Glibc
import JSON
import ManagementModel
import VMM

/// What the destination does with a domain once its machine has arrived.
struct IncomingPlan: Sendable {
  /// Define it persistently (virsh `--persistent`).
  var persistent: Bool
  /// Leave it paused (virsh `--suspend`); otherwise it runs, as it did on the source.
  var suspend: Bool
}

/// Live migration between two daemons, as libvirt's client-driven protocol: the destination
/// prepares (a transient domain whose `skvm run --incoming defer` listens), the source sends
/// (QMP `migrate`, watched until it completes; its process then quits and the domain is shut
/// off as `migrated`), and the destination runs the domain when its machine has arrived.
/// Disks are shared storage: the same paths on both sides.
extension DomainManager {

  /// The destination's side: defines the arriving domain (transient until it has arrived) and
  /// starts its process listening; returns the URI the source must send to.
  public func prepareIncoming(_ request: IncomingMigrationRequest) async throws(ManagementError)
    -> IncomingMigrationReply
  {
    var (record, _) = try parseForDefinition(Array(request.xml.utf8))
    let listen = try listenAddress(request.listen)
    let records = try registryCall { () throws(RegistryError) in try registry.all() }
    if let existing = records.first(where: { $0.name == record.name || $0.uuid == record.uuid }) {
      if existing.state.isActive {
        throw ManagementError(
          .alreadyExists, "domain '\(existing.name)' (uuid \(existing.uuid)) is already running here")
      }
      guard existing.name == record.name, existing.uuid == record.uuid else {
        throw ManagementError(
          .alreadyExists,
          "domain '\(existing.name)' (uuid \(existing.uuid)) is defined here: the arriving domain is '\(record.name)' "
            + "(uuid \(record.uuid)); undefine or rename one of them first")
      }
      // The same domain, defined here and shut off: it keeps its definition's flags.
      record.persistent = existing.persistent
      record.autostart = existing.autostart
    } else {
      record.persistent = false
    }
    let definition = try definition(record)
    let missing = DomainLaunch.missingFiles(definition) { FileManager.default.fileExists(atPath: $0) }
    if let path = missing.first {
      throw ManagementError(
        .startFailed,
        "cannot receive '\(record.name)': \(path) does not exist here (migration needs shared storage: "
          + "the same disk image paths on both hosts)")
    }
    let stored = try registryCall { () throws(RegistryError) in try registry.define(record) }
    try startJob(stored, "incoming migration")
    defer { endJob(stored) }
    let domainID = try registryCall { () throws(RegistryError) in try registry.nextDomainID() }
    let monitorPath = paths.monitor(for: stored.uuid)
    let logPath = paths.log(for: stored.name)
    unlink(monitorPath)
    appendToLog(logPath, "skvmd: receiving domain '\(stored.name)' (id \(domainID)) by migration")
    let arguments = [
      "run", "--name", stored.name, "--qmp", "unix:\(monitorPath)", "--console-socket",
      paths.console(for: stored.uuid), "--incoming", "defer",
    ]
    let uuid = stored.uuid
    let outcome = await spawnProcess(uuid, arguments: arguments, logPath: logPath, monitorPath: monitorPath) {
      process throws(DomainProcessError) in
      try process.execute("migrate-incoming", arguments: ["uri": .string("tcp:\(listen)")])
      let status = try process.execute("query-migrate")
      guard let port = status["socket-address"]?.array?.first?["port"]?.string.flatMap({ Int($0) }) else {
        throw DomainProcessError("it did not say where it listens")
      }
      return port
    }
    let process: DomainProcess
    let port: Int
    switch outcome {
    case .success(let value): (process, port) = value
    case .failure(let error):
      if !stored.persistent { try? registry.remove(uuid: uuid) }
      let tail = logTail(logPath)
      throw ManagementError(
        .startFailed,
        "cannot receive '\(stored.name)': \(error)" + (tail.isEmpty ? "" : "; its log ends:\n" + tail))
    }
    processes[uuid] = process
    incoming[uuid] = IncomingPlan(persistent: request.persistent ?? false, suspend: request.suspend ?? false)
    let updated = try registryCall { () throws(RegistryError) in
      try registry.update(uuid: uuid) {
        $0.state = .paused
        $0.reason = .migrating
        $0.pid = process.pid
        $0.processStart = process.startTime
        $0.domainID = domainID
      }
    }
    watch(uuid, process)
    publish(stored, "Started", "Migrated")
    // A source that never comes (its client died before sending) does not leave the domain
    // waiting here for ever.
    let abandon = incomingAbandonSeconds
    Task { [weak self] in
      try? await Task.sleep(for: .seconds(abandon))
      await self?.abandonIncoming(uuid, process)
    }
    return IncomingMigrationReply(domain: summary(updated ?? stored), uri: "tcp:\(listen.host):\(port)")
  }

  /// Destroys a domain still waiting for its source (nobody connected) after
  /// `incomingAbandonSeconds`.
  func abandonIncoming(_ uuid: String, _ process: DomainProcess) async {
    guard incoming[uuid] != nil, processes[uuid] === process, let record = try? registry.record(uuid: uuid) else {
      return
    }
    let status = await offload { (try? process.execute("query-migrate"))?["status"]?.string }
    guard status == "setup" || status == nil else { return }
    appendToLog(
      paths.log(for: record.name),
      "skvmd: no migration source connected within \(Int(incomingAbandonSeconds)) s: giving up on '\(record.name)'")
    _ = try? await destroy(uuid)
  }

  /// Where the destination listens: `tcp:HOST[:PORT]` (port 0 or none: any free one), loopback
  /// when nothing is given.
  func listenAddress(_ text: String?) throws(ManagementError) -> MigrationAddress {
    var uri = text ?? "tcp:127.0.0.1:0"
    if !uri.hasPrefix("tcp:") { uri = "tcp:" + uri }
    if !uri.dropFirst(4).contains(":") { uri += ":0" }
    do { return try MigrationAddress(parsing: uri, listening: true) } catch {
      throw ManagementError(.badRequest, "not a migration address to listen on: \(error.description)")
    }
  }

  /// The destination heard that the machine has arrived (QMP `MIGRATION` completed): the
  /// domain runs here now (or stays paused, as asked or as it was on the source).
  func incomingArrived(_ uuid: String) async {
    guard let plan = incoming.removeValue(forKey: uuid), let record = try? registry.record(uuid: uuid),
      let process = processes[uuid], let definition = try? definition(record)
    else { return }
    let pins = definition.vcpuPins
    let suspend = plan.suspend
    let status = await offload { () -> JSONValue? in
      try? process.pin(pins)
      let status = try? process.execute("query-status")
      if status?["running"]?.bool == false && !suspend { _ = try? process.execute("cont") }
      return try? process.execute("query-status")
    }
    let running = status?["running"]?.bool ?? true
    _ = try? registry.update(uuid: uuid) {
      $0.state = running ? .running : .paused
      $0.reason = running ? .migrated : .user
      if plan.persistent { $0.persistent = true }
    }
    publish(record, running ? "Resumed" : "Suspended", "Migrated")
  }

  /// The source's side: sends the running domain's machine to `request.uri` (a destination
  /// prepared by `prepareIncoming`) and waits until it runs there; then this process quits and
  /// the domain is shut off (migrated) — or forgotten, with `undefineSource` or if transient.
  /// On any failure the domain keeps running here (resumed if it was paused for the copy).
  public func migrate(_ reference: String, _ request: MigrationRequest) async throws(ManagementError) -> DomainSummary {
    let record = try record(reference)
    let process = try runningProcess(record)
    // A live migration goes to another skvm over TCP; QMP's other targets (file:) are not this verb's.
    do { _ = try MigrationAddress(parsing: request.uri) } catch {
      throw ManagementError(.badRequest, "not a migration URI: \(error.description)")
    }
    if let timeout = request.timeout, timeout < 1 {
      throw ManagementError(.badRequest, "timeout \(timeout): give a number of seconds of at least 1")
    }
    try startJob(record, "migrate")
    defer { endJob(record) }
    let wasRunning = record.state == .running
    var pausedHere = false
    func resumeIfPaused() async {
      guard pausedHere else { return }
      _ = try? await monitorCommand(record, "cont")
      _ = try? setState(record, .running, .unpaused, event: ("Resumed", "Migration"))
    }
    if !(request.live ?? false) && wasRunning {
      _ = try await monitorCommand(record, "stop")
      pausedHere = true
    }
    do {
      _ = try await monitorCommand(record, "migrate", ["uri": .string(request.uri)])
    } catch {
      await resumeIfPaused()
      throw ManagementError(.operationInvalid, "cannot migrate '\(record.name)' to \(request.uri): \(error.message)")
    }
    appendToLog(paths.log(for: record.name), "skvmd: migrating domain '\(record.name)' to \(request.uri)")
    let started = Date()
    while true {
      try? await Task.sleep(for: .milliseconds(5))
      let status: JSONValue
      do {
        status = try await monitorCommand(record, "query-migrate")
      } catch {
        throw ManagementError(.operationInvalid, "migration of '\(record.name)' lost its source: \(error.message)")
      }
      switch status["status"]?.string {
      case "completed":
        migratedAway.insert(record.uuid)
        return await finishOutgoing(record, process, undefine: request.undefineSource ?? false)
      case "failed", "cancelled":
        await resumeIfPaused()
        let why = status["error-desc"]?.string ?? status["status"]?.string ?? "failed"
        appendToLog(paths.log(for: record.name), "skvmd: migration of '\(record.name)' failed: \(why)")
        throw ManagementError(.operationInvalid, "migration of '\(record.name)' to \(request.uri) failed: \(why)")
      default:
        if let timeout = request.timeout, !pausedHere, Date().timeIntervalSince(started) >= Double(timeout) {
          // virsh --timeout: the guest is paused so that the last pass completes.
          appendToLog(
            paths.log(for: record.name), "skvmd: migration still copying after \(timeout) s: pausing the guest")
          if (try? await monitorCommand(record, "stop")) != nil { pausedHere = true }
        }
      }
    }
  }

  /// The machine runs on the destination: this process quits, and the domain is shut off
  /// (migrated), or forgotten when asked or transient.
  private func finishOutgoing(_ record: DomainRecord, _ process: DomainProcess, undefine: Bool) async -> DomainSummary {
    let uuid = record.uuid
    if undefine { _ = try? registry.update(uuid: uuid) { $0.persistent = false } }
    appendToLog(paths.log(for: record.name), "skvmd: domain '\(record.name)' migrated: it runs on the destination")
    _ = await offload { try? process.execute("quit") }
    await waitForExit(uuid, process, killAfter: 5)
    var final = record
    final.state = .shutOff
    final.reason = .migrated
    final.domainID = nil
    return summary((try? registry.record(uuid: uuid)) ?? final)
  }
}
