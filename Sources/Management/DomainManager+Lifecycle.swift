import DiskImage
import DomainXML
import Foundation
import Glibc
import JSON
import ManagementModel
import Network

/// Lifecycle: start, create, the monitor-driven verbs, destroy, vCPU pinning.
extension DomainManager {

  /// `start`: runs a defined domain.
  public func start(_ reference: String) async throws(ManagementError) -> DomainSummary {
    let record = try record(reference)
    if record.template {
      throw ManagementError(
        .operationInvalid,
        "domain '\(record.name)' is a template: clone it ('skvm ctl clone \(record.name) NEW') and start the clone")
    }
    if record.state.isActive {
      throw ManagementError(.operationInvalid, "domain '\(record.name)' is already active")
    }
    try startJob(record, "start")
    defer { endJob(record) }
    return try await launch(record)
  }

  /// `create`: defines a transient domain and starts it.
  public func create(_ xml: [UInt8]) async throws(ManagementError) -> DomainSummary {
    var (record, _) = try parseForDefinition(xml)
    record.persistent = false
    if let existing = try registryCall({ () throws(RegistryError) in try registry.record(named: record.name) }) {
      throw ManagementError(.alreadyExists, "domain '\(existing.name)' already exists with uuid \(existing.uuid)")
    }
    let stored = try registryCall { () throws(RegistryError) in try registry.define(record) }
    try startJob(stored, "create")
    defer { endJob(stored) }
    do {
      return try await launch(stored)
    } catch {
      try? registry.remove(uuid: stored.uuid)
      throw error
    }
  }

  func launch(_ record: DomainRecord, reason: DomainStateReason = .booted) async throws(ManagementError)
    -> DomainSummary
  {
    let definition = try definition(record)
    let missing = DomainLaunch.missingFiles(definition) { FileManager.default.fileExists(atPath: $0) }
    if let path = missing.first {
      throw ManagementError(.startFailed, "cannot start '\(record.name)': \(path) does not exist")
    }
    let domainID = try registryCall { () throws(RegistryError) in try registry.nextDomainID() }
    let monitorPath = paths.monitor(for: record.uuid)
    let logPath = paths.log(for: record.name)
    unlink(monitorPath)
    appendToLog(logPath, "skvmd: starting domain '\(record.name)' (id \(domainID))")
    let arguments = DomainLaunch.arguments(
      for: definition, monitorPath: monitorPath, consolePath: paths.console(for: record.uuid))
    let pins = definition.vcpuPins
    let uuid = record.uuid
    let outcome = await spawnProcess(uuid, arguments: arguments, logPath: logPath, monitorPath: monitorPath) {
      process throws(DomainProcessError) in
      try process.pin(pins)
      try process.execute("cont")
      // A guest that ends at once (powers off, resets) ends before it answers: its end is
      // the watcher's to report, with the event the monitor heard.
      return (try? process.execute("query-status")) ?? ["running": true]
    }
    let process: DomainProcess
    let status: JSONValue
    switch outcome {
    case .success(let value): (process, status) = value
    case .failure(let error):
      let tail = logTail(logPath)
      throw ManagementError(
        .startFailed, "cannot start '\(record.name)': \(error)" + (tail.isEmpty ? "" : "; its log ends:\n" + tail))
    }
    processes[uuid] = process
    let paused = status["running"]?.bool == false
    let updated = try registryCall { () throws(RegistryError) in
      try registry.update(uuid: uuid) {
        $0.state = paused ? .paused : .running
        $0.reason = paused ? .user : reason
        $0.pid = process.pid
        $0.processStart = process.startTime
        $0.domainID = domainID
      }
    }
    watch(uuid, process)
    publish(record, "Started", reason == .booted ? "Booted" : "Restored")
    return summary(updated ?? record)
  }

  /// Starts `skvm` with `arguments` for domain `uuid`, connects the daemon's monitor to it
  /// (its events go to `monitorEvent`), then runs `ready` on it — all off the actor. Any
  /// failure after the start kills the process.
  func spawnProcess<T: Sendable>(
    _ uuid: String, arguments: [String], logPath: String, monitorPath: String,
    ready: @escaping @Sendable (DomainProcess) throws(DomainProcessError) -> T
  ) async -> Result<(DomainProcess, T), DomainProcessError> {
    let executable = skvmExecutable
    let timeout = monitorTimeout
    let events: @Sendable (String, JSONValue) -> Void = { [weak self] name, message in
      guard let self else { return }
      Task { await self.monitorEvent(uuid, name, message) }
    }
    return await offload { () -> Result<(DomainProcess, T), DomainProcessError> in
      do throws(DomainProcessError) {
        let process = try DomainProcess.spawn(
          executable: executable, arguments: arguments, logPath: logPath, monitorPath: monitorPath)
        do throws(DomainProcessError) {
          try process.connectMonitor(timeout: timeout, onEvent: events)
          return .success((process, try ready(process)))
        } catch {
          process.signal(SIGKILL)
          return .failure(error)
        }
      } catch {
        return .failure(error)
      }
    }
  }

  /// Waits until domain `uuid`'s process has ended, killing it (SIGKILL) after `seconds`.
  func waitForExit(_ uuid: String, _ process: DomainProcess, killAfter seconds: Double) async {
    let killer = Task {
      try await Task.sleep(for: .seconds(seconds))
      process.signal(SIGKILL)
    }
    await withCheckedContinuation { continuation in
      if processes[uuid] == nil {
        continuation.resume()
      } else {
        exitWaiters[uuid, default: []].append(continuation)
      }
    }
    killer.cancel()
  }

  func watch(_ uuid: String, _ process: DomainProcess) {
    process.watch { [weak self] exit in
      guard let self else { return }
      Task { await self.processExited(uuid, process, exit) }
    }
  }

  func runningProcess(_ record: DomainRecord) throws(ManagementError) -> DomainProcess {
    guard record.state.isActive, let process = processes[record.uuid] else {
      throw ManagementError(.operationInvalid, "domain '\(record.name)' is not running")
    }
    return process
  }

  func monitorCommand(_ record: DomainRecord, _ command: String, _ arguments: [String: JSONValue] = [:])
    async throws(ManagementError) -> JSONValue
  {
    let process = try runningProcess(record)
    let result = await offload { () -> Result<JSONValue, DomainProcessError> in
      do throws(DomainProcessError) {
        return .success(try process.execute(command, arguments: arguments))
      } catch {
        return .failure(error)
      }
    }
    switch result {
    case .success(let value): return value
    case .failure(let error):
      throw ManagementError(.operationInvalid, "domain '\(record.name)': \(command) failed: \(error)")
    }
  }

  /// `suspend`: pauses the vCPUs.
  public func suspend(_ reference: String) async throws(ManagementError) -> DomainSummary {
    let record = try record(reference)
    try startJob(record, "suspend")
    defer { endJob(record) }
    if record.state == .paused { throw ManagementError(.operationInvalid, "domain '\(record.name)' is already paused") }
    _ = try await monitorCommand(record, "stop")
    return try setState(record, .paused, .user, event: ("Suspended", "Paused"))
  }

  /// `resume`: runs paused vCPUs again.
  public func resume(_ reference: String) async throws(ManagementError) -> DomainSummary {
    let record = try record(reference)
    try startJob(record, "resume")
    defer { endJob(record) }
    if record.state != .paused { throw ManagementError(.operationInvalid, "domain '\(record.name)' is not paused") }
    _ = try await monitorCommand(record, "cont")
    return try setState(record, .running, .unpaused, event: ("Resumed", "Unpaused"))
  }

  /// `shutdown`: presses the ACPI power button; the domain shuts off when the guest powers off.
  public func shutdown(_ reference: String) async throws(ManagementError) -> DomainSummary {
    let record = try record(reference)
    try startJob(record, "shutdown")
    defer { endJob(record) }
    _ = try await monitorCommand(record, "system_powerdown")
    return summary(record)
  }

  /// `reboot`: asks the guest to power off (ACPI) and starts it again when it has.
  public func reboot(_ reference: String) async throws(ManagementError) -> DomainSummary {
    let record = try record(reference)
    try startJob(record, "reboot")
    defer { endJob(record) }
    rebooting.insert(record.uuid)
    do {
      _ = try await monitorCommand(record, "system_powerdown")
    } catch {
      rebooting.remove(record.uuid)
      throw error
    }
    return summary(record)
  }

  /// `reset`: a hard reset, as the reset button.
  public func reset(_ reference: String) async throws(ManagementError) -> DomainSummary {
    let record = try record(reference)
    try startJob(record, "reset")
    defer { endJob(record) }
    _ = try await monitorCommand(record, "system_reset")
    return summary(record)
  }

  /// `destroy`: stops the domain at once (SIGTERM, then SIGKILL after `grace` seconds) and waits
  /// until its process is gone.
  public func destroy(_ reference: String, grace: Double = 5) async throws(ManagementError) -> DomainSummary {
    var record = try record(reference)
    // A domain between two boots (on_reboot=restart): no further restart; wait for this one.
    noRestart.insert(record.uuid)
    while jobs[record.uuid] == "restart" { try? await Task.sleep(for: .milliseconds(10)) }
    record = try self.record(record.uuid)
    if !record.state.isActive || processes[record.uuid] == nil { noRestart.remove(record.uuid) }
    try startJob(record, "destroy")
    defer { endJob(record) }
    let process = try runningProcess(record)
    destroying.insert(record.uuid)
    process.signal(SIGTERM)
    let uuid = record.uuid
    await waitForExit(uuid, process, killAfter: grace)
    let current = try registryCall { () throws(RegistryError) in try registry.record(uuid: uuid) }
    return summary(current ?? record)
  }

  /// `vcpupin DOMAIN`: each vCPU's host CPUs — the threads' affinity while it runs, the
  /// definition's pins (or every host CPU) otherwise.
  public func vcpuPins(_ reference: String) async throws(ManagementError) -> [VCPUPin] {
    let record = try record(reference)
    let definition = try definition(record)
    let all = CPUSet.format(Set(0..<CPUSet.hostCount))
    if record.state.isActive, let process = processes[record.uuid] {
      let result = await offload { () -> Result<[Int: Int32], DomainProcessError> in
        do throws(DomainProcessError) { return .success(try process.vcpuThreads()) } catch { return .failure(error) }
      }
      guard case .success(let threads) = result else {
        throw ManagementError(.operationInvalid, "domain '\(record.name)': its vCPU threads are not known")
      }
      return threads.keys.sorted().map { vcpu in
        VCPUPin(vcpu: vcpu, cpuset: threads[vcpu].flatMap(CPUSet.affinity).map(CPUSet.format) ?? all)
      }
    }
    return (0..<definition.vcpus).map { VCPUPin(vcpu: $0, cpuset: definition.vcpuPins[$0] ?? all) }
  }

  /// `vcpupin DOMAIN VCPU LIST`: pins vCPU `vcpu` to host CPUs `cpuset` in the running domain
  /// (`live`) and/or its definition (`config`).
  public func pinVCPU(_ reference: String, vcpu: Int, cpuset: String, live: Bool, config: Bool)
    async throws(ManagementError) -> [VCPUPin]
  {
    let record = try record(reference)
    var definition = try definition(record)
    guard (0..<definition.vcpus).contains(vcpu) else {
      throw ManagementError(.badRequest, "vCPU \(vcpu) is not one of '\(record.name)''s (0–\(definition.vcpus - 1))")
    }
    guard let cpus = CPUSet.parse(cpuset) else {
      throw ManagementError(
        .badRequest, "'\(cpuset)' is not a list of this host's CPUs (0–\(CPUSet.hostCount - 1)), such as 0-3,^2")
    }
    let list = CPUSet.format(cpus)
    if live {
      let process = try runningProcess(record)
      let result = await offload { () -> Result<Void, DomainProcessError> in
        do throws(DomainProcessError) { return .success(try process.pin([vcpu: list])) } catch {
          return .failure(error)
        }
      }
      if case .failure(let error) = result { throw ManagementError(.operationInvalid, "\(error)") }
    }
    if config {
      definition.vcpuPins[vcpu] = list
      var updated = record
      updated.xml = DomainXML.format(definition)
      _ = try registryCall { () throws(RegistryError) in try registry.define(updated) }
    }
    return try await vcpuPins(record.uuid)
  }

  /// `qemu-monitor-command`: a command line for the human monitor (`hmp`), or a QMP command as JSON.
  public func monitor(_ reference: String, command: String, human: Bool) async throws(ManagementError) -> JSONValue {
    let record = try record(reference)
    if human {
      return try await monitorCommand(record, "human-monitor-command", ["command-line": .string(command)])
    }
    guard let request = try? JSONValue.parse(Array(command.utf8)), let name = request["execute"]?.string else {
      throw ManagementError(.badRequest, "a QMP command is a JSON object such as {\"execute\": \"query-status\"}")
    }
    return try await monitorCommand(record, name, request["arguments"]?.object ?? [:])
  }

  func setState(
    _ record: DomainRecord, _ state: DomainState, _ reason: DomainStateReason, event: (String, String)
  ) throws(ManagementError) -> DomainSummary {
    let updated = try registryCall { () throws(RegistryError) in
      try registry.update(uuid: record.uuid) {
        $0.state = state
        $0.reason = reason
      }
    }
    publish(record, event.0, event.1)
    return summary(updated ?? record)
  }
}
