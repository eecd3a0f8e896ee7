import DiskImage
import DomainXML
import Foundation
import Glibc
import JSON
import ManagementModel
import Network

/// What the domains' processes report: monitor events, their end (and on_* actions), and
/// finding them again when the daemon starts.
extension DomainManager {
  // MARK: Process events

  func monitorEvent(_ uuid: String, _ name: String, _ message: JSONValue) {
    guard let record = try? registry.record(uuid: uuid), record.state.isActive else { return }
    switch name {
    case "STOP" where record.state != .paused:
      let migrating = jobs[uuid] == "migrate"
      _ = try? setState(
        record, .paused, migrating ? .migrating : .user, event: ("Suspended", migrating ? "Migration" : "Paused"))
    case "MIGRATION" where incoming[uuid] != nil && message["data"]?["status"]?.string == "completed":
      Task { await self.incomingArrived(uuid) }
    case "RESUME" where record.state == .paused:
      _ = try? setState(record, .running, .unpaused, event: ("Resumed", "Unpaused"))
    case "SHUTDOWN":
      publish(record, "Shutdown", message["data"]?["reason"]?.string ?? "")
    default: break
    }
  }

  func processExited(_ uuid: String, _ process: DomainProcess, _ exit: DomainExit) async {
    guard processes[uuid] === process else { return }
    processes.removeValue(forKey: uuid)
    defer {
      for waiter in exitWaiters.removeValue(forKey: uuid) ?? [] { waiter.resume() }
    }
    let destroyed = destroying.remove(uuid) != nil
    let rebootAsked = rebooting.remove(uuid) != nil
    let migrated = migratedAway.remove(uuid) != nil
    let neverArrived = incoming.removeValue(forKey: uuid) != nil
    guard let record = try? registry.record(uuid: uuid) else { return }
    let definition = try? definition(record)
    var state = DomainState.shutOff
    var reason: DomainStateReason
    var action = DomainDefinition.LifecycleAction.destroy
    switch (destroyed, exit.shutdownReason) {
    case (true, _): reason = .destroyed
    case (false, "guest-shutdown"):
      reason = .shutdown
      action = rebootAsked ? .restart : definition?.onPoweroff ?? .destroy
    case (false, "guest-reset"):
      reason = .shutdown
      action = definition?.onReboot ?? .restart
    case (false, "guest-panic"):
      reason = .crashed
      action = definition?.onCrash ?? .destroy
    case (false, "host-qmp-quit"), (false, "host-signal"):
      reason = .shutdown
    default:
      if exit.status == 0 {
        reason = .shutdown
      } else {
        reason = .crashed
        action = definition?.onCrash ?? .destroy
      }
    }
    if exit.status == 2 && !destroyed {
      reason = .crashed
      action = definition?.onCrash ?? .destroy
    }
    // Its machine runs elsewhere now; or it never arrived here.
    if migrated || neverArrived {
      reason = migrated ? .migrated : .failed
      action = .destroy
    }
    if reason == .crashed && action == .destroy { state = .shutOff }
    appendToLog(
      paths.log(for: record.name),
      "skvmd: domain '\(record.name)' ended (\(reason.rawValue)"
        + (exit.shutdownReason.map { ", \($0)" } ?? "") + (exit.status.map { ", exit status \($0)" } ?? "")
        + (exit.signal.map { ", signal \($0)" } ?? "") + ")")
    let restart =
      action == .restart && record.persistent && !record.template && !noRestart.contains(uuid) && jobs[uuid] == nil
    if !restart { noRestart.remove(uuid) }
    if !record.persistent && !restart {
      try? registry.remove(uuid: uuid)
    } else {
      // A domain that restarts stays running (as in libvirt): only its process changes.
      _ = try? registry.update(uuid: uuid) {
        $0.state = restart ? .running : state
        $0.reason = restart ? .booted : reason
        $0.pid = nil
        $0.processStart = nil
        $0.domainID = restart ? $0.domainID : nil
      }
    }
    publish(record, restart ? "Rebooted" : "Stopped", reason.rawValue.capitalized)
    guard restart, let current = try? registry.record(uuid: uuid) else { return }
    jobs[uuid] = "restart"
    defer { jobs.removeValue(forKey: uuid) }
    do {
      _ = try await launch(current)
    } catch {
      appendToLog(paths.log(for: record.name), "skvmd: domain '\(record.name)' did not restart: \(error)")
      _ = try? registry.update(uuid: uuid) {
        $0.state = .shutOff
        $0.reason = .failed
        $0.domainID = nil
      }
      noRestart.remove(uuid)
      publish(record, "Stopped", "Failed")
    }
  }

  // MARK: Daemon start

  /// Finds the domains that were running when the daemon last stopped: a process that still
  /// runs (same pid and start time) is taken over; one that died meanwhile is reported shut off
  /// (crashed). Then starts the autostart domains that are not running. Returns what it did.
  public func recover() async -> [String] {
    var notes: [String] = []
    let records = (try? registry.all()) ?? []
    for record in records where record.pid != nil || record.state.isActive {
      if let pid = record.pid, let start = record.processStart,
        let process = DomainProcess.adopt(pid: pid, startTime: start, monitorPath: paths.monitor(for: record.uuid))
      {
        let uuid = record.uuid
        let events: @Sendable (String, JSONValue) -> Void = { [weak self] name, message in
          guard let self else { return }
          Task { await self.monitorEvent(uuid, name, message) }
        }
        let status = await offload { () -> JSONValue? in
          do {
            try process.connectMonitor(timeout: 5, onEvent: events)
            return try process.execute("query-status")
          } catch {
            return nil
          }
        }
        processes[uuid] = process
        watch(uuid, process)
        if let status {
          let running = status["running"]?.bool ?? true
          _ = try? registry.update(uuid: uuid) {
            $0.state = running ? .running : .paused
            if !running { $0.reason = .user }
          }
          notes.append("domain '\(record.name)' is running (pid \(pid)): taken over")
        } else {
          notes.append("domain '\(record.name)' runs (pid \(pid)) but its monitor does not answer")
        }
      } else {
        if record.persistent {
          _ = try? registry.update(uuid: record.uuid) {
            $0.state = .shutOff
            $0.reason = .crashed
            $0.pid = nil
            $0.processStart = nil
            $0.domainID = nil
          }
        } else {
          try? registry.remove(uuid: record.uuid)
        }
        appendToLog(paths.log(for: record.name), "skvmd: domain '\(record.name)' ended while the daemon was away")
        notes.append("domain '\(record.name)' ended while the daemon was away: shut off (crashed)")
        publish(record, "Stopped", "Crashed")
      }
    }
    for record in (try? registry.all()) ?? [] where record.autostart && !record.state.isActive && !record.template {
      do {
        _ = try await start(record.uuid)
        notes.append("domain '\(record.name)' autostarted")
      } catch {
        notes.append("domain '\(record.name)' did not autostart: \(error)")
      }
    }
    return notes
  }
}
