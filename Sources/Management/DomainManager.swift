import DiskImage
import DomainXML
import Foundation
import Glibc
import JSON
import ManagementModel
import Network

/// The daemon's core: owns the registry and the running domains' processes, carries out
/// lifecycle requests (one job per domain at a time), finds running domains again after a
/// restart, and tells subscribers what happened.
public actor DomainManager {
  let registry: DomainRegistry
  public nonisolated let paths: ManagementPaths
  let skvmExecutable: String
  /// Running processes by domain UUID.
  var processes: [String: DomainProcess] = [:]
  /// The job each busy domain is running, by UUID.
  var jobs: [String: String] = [:]
  /// Domains being destroyed, or asked to reboot (restarted when the guest powers off).
  var destroying: Set<String> = []
  var rebooting: Set<String> = []
  /// Domains whose user stopped them: not restarted by on_reboot/on_poweroff/on_crash.
  var noRestart: Set<String> = []
  /// Domains arriving by migration (their process waits for the source), by UUID: what to do
  /// once they have arrived.
  var incoming: [String: IncomingPlan] = [:]
  /// Domains whose machine has moved to another host: their process ends as `migrated`.
  var migratedAway: Set<String> = []
  /// Waiting for a domain's process to end, by UUID.
  var exitWaiters: [String: [CheckedContinuation<Void, Never>]] = [:]
  var subscribers: [UUID: AsyncStream<DomainEvent>.Continuation] = [:]
  /// How long a started process may take to answer on its monitor.
  let monitorTimeout: Double
  /// How long a domain prepared for an incoming migration waits for its source to connect.
  let incomingAbandonSeconds: Double

  public init(
    paths: ManagementPaths, skvmExecutable: String, monitorTimeout: Double = 30, incomingAbandonSeconds: Double = 120
  ) throws {
    try paths.create()
    registry = try DomainRegistry(path: paths.database)
    self.paths = paths
    self.skvmExecutable = skvmExecutable
    self.monitorTimeout = monitorTimeout
    self.incomingAbandonSeconds = incomingAbandonSeconds
  }

  // MARK: Lookup

  func record(_ reference: String) throws(ManagementError) -> DomainRecord {
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

  func registryCall<T>(_ body: () throws(RegistryError) -> T) throws(ManagementError) -> T {
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

  func definition(_ record: DomainRecord) throws(ManagementError) -> DomainDefinition {
    do {
      return try DomainXML.parse(record.xml).definition
    } catch {
      throw ManagementError(.internalError, "the stored definition of '\(record.name)' no longer parses: \(error)")
    }
  }

  func summary(_ record: DomainRecord) -> DomainSummary {
    DomainSummary(record: record, title: title(of: record))
  }

  /// Each definition's title, kept while its XML stays the same (`list` of many domains would
  /// otherwise parse every definition each time).
  var titles: [String: (xml: String, title: String?)] = [:]

  func title(of record: DomainRecord) -> String? {
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

  // MARK: Jobs

  func startJob(_ record: DomainRecord, _ job: String) throws(ManagementError) {
    if let running = jobs[record.uuid] {
      throw ManagementError(
        .busy, "domain '\(record.name)' is busy: a \(running) job is under way; try again when it is done")
    }
    jobs[record.uuid] = job
  }

  func endJob(_ record: DomainRecord) { jobs.removeValue(forKey: record.uuid) }

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

  func unsubscribe(_ id: UUID) { subscribers.removeValue(forKey: id) }

  func publish(_ record: DomainRecord, _ event: String, _ detail: String) {
    let message = DomainEvent(
      name: record.name, uuid: record.uuid, event: event, detail: detail, timestamp: Date().timeIntervalSince1970)
    for subscriber in subscribers.values { subscriber.yield(message) }
  }

  // MARK: Helpers

  func appendToLog(_ path: String, _ line: String) {
    let fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0o600)
    guard fd >= 0 else { return }
    let bytes = Array((line + "\n").utf8)
    _ = bytes.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
    close(fd)
  }

  func logTail(_ path: String, lines: Int = 8) -> String {
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
