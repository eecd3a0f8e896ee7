import DiskImage
import DomainXML
import Foundation
import Glibc
import JSON
import ManagementModel

/// The daemon's core: owns the registry and the running domains' processes, carries out
/// lifecycle requests (one job per domain at a time), finds running domains again after a
/// restart, and tells subscribers what happened.
public actor DomainManager {
  private let registry: DomainRegistry
  public nonisolated let paths: ManagementPaths
  private let skvmExecutable: String
  /// Running processes by domain UUID.
  private var processes: [String: DomainProcess] = [:]
  /// The job each busy domain is running, by UUID.
  private var jobs: [String: String] = [:]
  /// Domains being destroyed, or asked to reboot (restarted when the guest powers off).
  private var destroying: Set<String> = []
  private var rebooting: Set<String> = []
  /// Domains whose user stopped them: not restarted by on_reboot/on_poweroff/on_crash.
  private var noRestart: Set<String> = []
  /// Waiting for a domain's process to end, by UUID.
  private var exitWaiters: [String: [CheckedContinuation<Void, Never>]] = [:]
  private var subscribers: [UUID: AsyncStream<DomainEvent>.Continuation] = [:]
  /// How long a started process may take to answer on its monitor.
  private let monitorTimeout: Double

  public init(paths: ManagementPaths, skvmExecutable: String, monitorTimeout: Double = 30) throws {
    try paths.create()
    registry = try DomainRegistry(path: paths.database)
    self.paths = paths
    self.skvmExecutable = skvmExecutable
    self.monitorTimeout = monitorTimeout
  }

  // MARK: Lookup

  private func record(_ reference: String) throws(ManagementError) -> DomainRecord {
    let records = try registryCall { () throws(RegistryError) in try registry.all() }
    if let byName = records.first(where: { $0.name == reference }) { return byName }
    if let uuid = DomainName.uuid(reference)?.uuidString.lowercased(),
      let byUUID = records.first(where: { $0.uuid == uuid })
    {
      return byUUID
    }
    if let id = Int(reference), let byID = records.first(where: { $0.state.isActive && $0.domainID == id }) {
      return byID
    }
    throw .noDomain(reference)
  }

  private func registryCall<T>(_ body: () throws(RegistryError) -> T) throws(ManagementError) -> T {
    do {
      return try body()
    } catch .nameTaken(let name, let uuid) {
      throw ManagementError(.alreadyExists, "domain '\(name)' already exists with uuid \(uuid)")
    } catch .uuidTaken(let uuid, let name) {
      throw ManagementError(.alreadyExists, "a domain with uuid \(uuid) already exists: '\(name)'")
    } catch {
      throw ManagementError(.internalError, error.description)
    }
  }

  private func definition(_ record: DomainRecord) throws(ManagementError) -> DomainDefinition {
    do {
      return try DomainXML.parse(record.xml).definition
    } catch {
      throw ManagementError(.internalError, "the stored definition of '\(record.name)' no longer parses: \(error)")
    }
  }

  private func summary(_ record: DomainRecord) -> DomainSummary {
    DomainSummary(record: record, title: title(of: record))
  }

  /// Each definition's title, kept while its XML stays the same (`list` of many domains would
  /// otherwise parse every definition each time).
  private var titles: [String: (xml: String, title: String?)] = [:]

  private func title(of record: DomainRecord) -> String? {
    if let cached = titles[record.uuid], cached.xml == record.xml { return cached.title }
    let title = (try? DomainXML.parse(record.xml))?.definition.title
    titles[record.uuid] = (record.xml, title)
    return title
  }

  // MARK: Queries

  /// Every domain (`list --all`), or the active ones.
  public func list(all: Bool) throws(ManagementError) -> [DomainSummary] {
    let records = try registryCall { () throws(RegistryError) in try registry.all() }
    return records.filter { all || $0.state.isActive }.map(summary)
  }

  /// `dominfo`.
  public func info(_ reference: String) throws(ManagementError) -> DomainInfo {
    let record = try record(reference)
    let definition = try definition(record)
    return DomainInfo(
      summary: summary(record), vcpus: definition.vcpus, maxMemoryKiB: definition.memoryKiB,
      usedMemoryKiB: definition.currentMemoryKiB ?? definition.memoryKiB, osType: definition.os.type,
      pid: record.state.isActive ? record.pid : nil, log: paths.log(for: record.name),
      console: record.state.isActive ? paths.console(for: record.uuid) : nil,
      disks: definition.disks.map { DiskSummary(device: $0.device.rawValue, target: $0.target, source: $0.source) },
      interfaces: definition.interfaces.map { interface in
        let model = interface.model ?? "virtio"
        switch interface.kind {
        case .user: return InterfaceSummary(device: nil, type: "user", source: nil, model: model, mac: interface.mac)
        case .ethernet(let tap):
          return InterfaceSummary(device: tap, type: "ethernet", source: nil, model: model, mac: interface.mac)
        case .bridge(let bridge, let tap):
          return InterfaceSummary(device: tap, type: "bridge", source: bridge, model: model, mac: interface.mac)
        }
      })
  }

  /// `dumpxml`.
  public func xml(_ reference: String) throws(ManagementError) -> String {
    let record = try record(reference)
    guard record.state.isActive, let id = record.domainID else { return record.xml }
    return DomainXML.format(try definition(record), id: id)
  }

  // MARK: Definitions

  /// `define`: stores (or redefines) a persistent domain.
  public func define(_ xml: [UInt8]) throws(ManagementError) -> DefineResult {
    var (record, warnings) = try parseForDefinition(xml)
    record.persistent = true
    let stored = try registryCall { () throws(RegistryError) in try registry.define(record) }
    publish(stored, "Defined", record.state == .shutOff ? "Added" : "Updated")
    return DefineResult(domain: summary(stored), warnings: warnings)
  }

  private func parseForDefinition(_ xml: [UInt8]) throws(ManagementError) -> (DomainRecord, [String]) {
    let parsed: DomainXML.Parsed
    do {
      parsed = try DomainXML.parse(xml)
    } catch {
      throw ManagementError(.invalidDefinition, "invalid domain XML: \(error)")
    }
    var definition = parsed.definition
    var warnings = parsed.warnings
    for index in definition.interfaces.indices where definition.interfaces[index].mac == nil {
      definition.interfaces[index].mac = MACAddress.random()
    }
    for path in DomainLaunch.missingFiles(definition, exists: { FileManager.default.fileExists(atPath: $0) }) {
      warnings.append("\(path) does not exist (yet): starting the domain will fail until it does")
    }
    let record = DomainRecord(
      uuid: definition.uuid.uuidString.lowercased(), name: definition.name, xml: DomainXML.format(definition),
      persistent: true, autostart: false, template: false, state: .shutOff, reason: .unknown, domainID: nil,
      pid: nil, processStart: nil, updatedAt: 0)
    return (record, warnings)
  }

  /// `undefine`: forgets a domain (a running one becomes transient, as in libvirt); with
  /// `removeStorage`, deletes its disk images too (not a CD-ROM's image; not while it runs).
  public func undefine(_ reference: String, removeStorage: Bool) throws(ManagementError) -> [String] {
    let record = try record(reference)
    try startJob(record, "undefine")
    defer { endJob(record) }
    var removed: [String] = []
    if record.state.isActive {
      if removeStorage {
        throw ManagementError(
          .operationInvalid, "domain '\(record.name)' is running: destroy it before removing its storage")
      }
      try registryCall { () throws(RegistryError) in
        _ = try registry.update(uuid: record.uuid) { $0.persistent = false }
      }
    } else {
      if removeStorage {
        for disk in try definition(record).disks where disk.device == .disk {
          guard let source = disk.source else { continue }
          if unlink(source) == 0 || errno == ENOENT { removed.append(source) }
        }
      }
      try registryCall { () throws(RegistryError) in try registry.remove(uuid: record.uuid) }
    }
    publish(record, "Undefined", "Removed")
    return removed
  }

  /// `autostart [--disable]`.
  public func setAutostart(_ reference: String, _ enabled: Bool) throws(ManagementError) -> DomainSummary {
    let record = try record(reference)
    guard record.persistent else {
      throw ManagementError(.operationInvalid, "domain '\(record.name)' is transient: it cannot autostart")
    }
    let updated = try registryCall { () throws(RegistryError) in
      try registry.update(uuid: record.uuid) { $0.autostart = enabled }
    }
    return summary(updated ?? record)
  }

  /// Marks a domain a template (never started, only cloned), or not.
  public func setTemplate(_ reference: String, _ enabled: Bool) throws(ManagementError) -> DomainSummary {
    let record = try record(reference)
    if enabled && record.state.isActive {
      throw ManagementError(
        .operationInvalid, "domain '\(record.name)' is running: shut it down before making it a template")
    }
    let updated = try registryCall { () throws(RegistryError) in
      try registry.update(uuid: record.uuid) { $0.template = enabled }
    }
    return summary(updated ?? record)
  }

  /// `clone SOURCE NEW [--linked]` (virt-clone): a new domain with a new name, UUID and MAC
  /// addresses, and its own copies of the source's writable disks — full copies, or qcow2
  /// overlays backed by the source's images with `linked`. Read-only disks and CD-ROMs are shared.
  /// The source must be shut off (a template always is).
  public func clone(_ reference: String, name: String, linked: Bool) async throws(ManagementError) -> CloneResult {
    let source = try record(reference)
    if let problem = DomainName.problem(name) { throw ManagementError(.invalidDefinition, problem) }
    if let taken = try registryCall({ () throws(RegistryError) in try registry.record(named: name) }) {
      throw ManagementError(.alreadyExists, "domain '\(name)' already exists with uuid \(taken.uuid)")
    }
    if source.state.isActive {
      throw ManagementError(
        .operationInvalid, "domain '\(source.name)' is running: shut it down (or destroy it) before cloning it")
    }
    try startJob(source, "clone")
    defer { endJob(source) }
    var definition = try definition(source)
    definition.name = name
    definition.uuid = UUID()
    for index in definition.interfaces.indices { definition.interfaces[index].mac = MACAddress.random() }
    var plan: [(index: Int, from: String, to: String, format: String?)] = []
    for (index, disk) in definition.disks.enumerated() where disk.device == .disk && !disk.readOnly {
      guard let from = disk.source else { continue }
      plan.append((index, from, DiskClone.path(for: from, clone: name, index: plan.count), disk.format))
    }
    let copies = plan
    let outcome = await offload { () -> Result<[DiskImageFormat], DiskCloneFailure> in
      var made: [DiskImageFormat] = []
      for (number, copy) in copies.enumerated() {
        do throws(DiskCloneError) {
          made.append(try DiskClone.copy(source: copy.from, format: copy.format, to: copy.to, linked: linked))
        } catch {
          var written = copies.prefix(number)
          if case .image = error { written = copies.prefix(number + 1) }
          for earlier in written { unlink(earlier.to) }
          return .failure(DiskCloneFailure(message: "cannot copy \(copy.from) to \(copy.to): \(error)"))
        }
      }
      return .success(made)
    }
    let formats: [DiskImageFormat]
    switch outcome {
    case .success(let made): formats = made
    case .failure(let failure): throw ManagementError(.operationInvalid, failure.message)
    }
    for (copy, format) in zip(copies, formats) {
      definition.disks[copy.index].source = copy.to
      definition.disks[copy.index].format = format.rawValue
    }
    let record = DomainRecord(
      uuid: definition.uuid.uuidString.lowercased(), name: name, xml: DomainXML.format(definition), persistent: true,
      autostart: false, template: false, state: .shutOff, reason: .unknown, domainID: nil, pid: nil, processStart: nil,
      updatedAt: 0)
    do {
      let stored = try registryCall { () throws(RegistryError) in try registry.define(record) }
      publish(stored, "Defined", "Cloned")
      return CloneResult(domain: summary(stored), images: copies.map(\.to))
    } catch {
      for copy in copies { unlink(copy.to) }
      throw error
    }
  }

  // MARK: Jobs

  private func startJob(_ record: DomainRecord, _ job: String) throws(ManagementError) {
    if let running = jobs[record.uuid] {
      throw ManagementError(
        .busy, "domain '\(record.name)' is busy: a \(running) job is under way; try again when it is done")
    }
    jobs[record.uuid] = job
  }

  private func endJob(_ record: DomainRecord) { jobs.removeValue(forKey: record.uuid) }

  // MARK: Lifecycle

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

  private func launch(_ record: DomainRecord, reason: DomainStateReason = .booted) async throws(ManagementError)
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
    let executable = skvmExecutable
    let timeout = monitorTimeout
    let pins = definition.vcpuPins
    let uuid = record.uuid
    let events: @Sendable (String, JSONValue) -> Void = { [weak self] name, message in
      guard let self else { return }
      Task { await self.monitorEvent(uuid, name, message) }
    }
    let outcome = await offload { () -> Result<(DomainProcess, JSONValue), DomainProcessError> in
      do throws(DomainProcessError) {
        let process = try DomainProcess.spawn(
          executable: executable, arguments: arguments, logPath: logPath, monitorPath: monitorPath)
        do throws(DomainProcessError) {
          try process.connectMonitor(timeout: timeout, onEvent: events)
          try process.pin(pins)
          try process.execute("cont")
        } catch {
          process.signal(SIGKILL)
          return .failure(error)
        }
        // A guest that ends at once (powers off, resets) ends before it answers: its end is
        // the watcher's to report, with the event the monitor heard.
        return .success((process, (try? process.execute("query-status")) ?? ["running": true]))
      } catch {
        return .failure(error)
      }
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

  private func watch(_ uuid: String, _ process: DomainProcess) {
    process.watch { [weak self] exit in
      guard let self else { return }
      Task { await self.processExited(uuid, process, exit) }
    }
  }

  private func runningProcess(_ record: DomainRecord) throws(ManagementError) -> DomainProcess {
    guard record.state.isActive, let process = processes[record.uuid] else {
      throw ManagementError(.operationInvalid, "domain '\(record.name)' is not running")
    }
    return process
  }

  private func monitorCommand(_ record: DomainRecord, _ command: String, _ arguments: [String: JSONValue] = [:])
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
    let killer = Task {
      try await Task.sleep(for: .seconds(grace))
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

  private func setState(
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

  // MARK: Process events

  private func monitorEvent(_ uuid: String, _ name: String, _ message: JSONValue) {
    guard let record = try? registry.record(uuid: uuid), record.state.isActive else { return }
    switch name {
    case "STOP" where record.state != .paused:
      _ = try? setState(record, .paused, .user, event: ("Suspended", "Paused"))
    case "RESUME" where record.state == .paused:
      _ = try? setState(record, .running, .unpaused, event: ("Resumed", "Unpaused"))
    case "SHUTDOWN":
      publish(record, "Shutdown", message["data"]?["reason"]?.string ?? "")
    default: break
    }
  }

  private func processExited(_ uuid: String, _ process: DomainProcess, _ exit: DomainExit) async {
    guard processes[uuid] === process else { return }
    processes.removeValue(forKey: uuid)
    defer {
      for waiter in exitWaiters.removeValue(forKey: uuid) ?? [] { waiter.resume() }
    }
    let destroyed = destroying.remove(uuid) != nil
    let rebootAsked = rebooting.remove(uuid) != nil
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

  // MARK: Events

  /// A stream of lifecycle events until the caller stops listening.
  public func events() -> AsyncStream<DomainEvent> {
    let (stream, continuation) = AsyncStream<DomainEvent>.makeStream(bufferingPolicy: .bufferingNewest(1000))
    let id = UUID()
    subscribers[id] = continuation
    continuation.onTermination = { [weak self] _ in
      guard let self else { return }
      Task { await self.unsubscribe(id) }
    }
    return stream
  }

  private func unsubscribe(_ id: UUID) { subscribers.removeValue(forKey: id) }

  private func publish(_ record: DomainRecord, _ event: String, _ detail: String) {
    let message = DomainEvent(
      name: record.name, uuid: record.uuid, event: event, detail: detail, timestamp: Date().timeIntervalSince1970)
    for subscriber in subscribers.values { subscriber.yield(message) }
  }

  // MARK: Helpers

  private func appendToLog(_ path: String, _ line: String) {
    let fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0o600)
    guard fd >= 0 else { return }
    let bytes = Array((line + "\n").utf8)
    _ = bytes.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
    close(fd)
  }

  private func logTail(_ path: String, lines: Int = 8) -> String {
    guard let text = try? String(contentsOfFile: path, encoding: .utf8) else { return "" }
    return text.split(separator: "\n").suffix(lines).joined(separator: "\n")
  }
}

/// Runs blocking work (process start, monitor round trips) on a thread of its own, off Swift
/// concurrency's cooperative pool.
func offload<T: Sendable>(_ body: @escaping @Sendable () -> T) async -> T {
  await withCheckedContinuation { continuation in
    Thread.detachNewThread { continuation.resume(returning: body()) }
  }
}

/// Why a disk could not be copied for a clone.
struct DiskCloneFailure: Error {
  let message: String
}
