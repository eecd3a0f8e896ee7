import Foundation
import GRDB
import ManagementModel

/// One domain as the registry keeps it: its definition (as XML), flags, and the last state the
/// daemon knew, with what it needs to find a running domain's process again after a restart.
public struct DomainRecord: Sendable, Codable, Equatable, FetchableRecord, PersistableRecord {
  public static let databaseTableName = "domain"

  /// The domain's UUID, lowercase with dashes (the primary key).
  public var uuid: String
  public var name: String
  /// The domain XML as `dumpxml` prints it (UUID and MAC addresses filled in).
  public var xml: String
  /// False for a transient domain (`create`, or one undefined while it runs): forgotten when it stops.
  public var persistent: Bool
  public var autostart: Bool
  /// A template is never started, only cloned.
  public var template: Bool
  public var state: DomainState
  public var reason: DomainStateReason
  /// virsh's domain id while it runs.
  public var domainID: Int?
  /// The process running it, and that process's start time (clock ticks since boot, from
  /// /proc/PID/stat), so a reused pid is not taken for it.
  public var pid: Int32?
  public var processStart: UInt64?
  /// When the row last changed (seconds since 1970).
  public var updatedAt: Double

  enum CodingKeys: String, CodingKey {
    case uuid, name, xml, persistent, autostart, template, state, reason
    case domainID = "domain_id"
    case pid
    case processStart = "process_start"
    case updatedAt = "updated_at"
  }
}

/// Why the registry refused a change.
public enum RegistryError: Error, CustomStringConvertible, Equatable {
  case nameTaken(String, uuid: String)
  case uuidTaken(String, name: String)
  case database(String)

  public var description: String {
    switch self {
    case .nameTaken(let name, let uuid): "domain '\(name)' already exists with uuid \(uuid)"
    case .uuidTaken(let uuid, let name): "domain '\(name)' already exists with uuid \(uuid)"
    case .database(let message): "the domain registry failed: \(message)"
    }
  }
}

/// The durable registry of domains: an SQLite database (through GRDB) whose every change is one
/// transaction, so a crash at any moment leaves it as it was before the change or after it.
public final class DomainRegistry: Sendable {
  private let database: DatabaseQueue

  /// Opens (creating and migrating as needed) the registry at `path`.
  public init(path: String) throws(RegistryError) {
    do {
      var configuration = Configuration()
      configuration.busyMode = .timeout(5)
      database = try DatabaseQueue(path: path, configuration: configuration)
      var migrator = DatabaseMigrator()
      migrator.registerMigration("v1") { db in
        try db.create(table: "domain") { table in
          table.primaryKey("uuid", .text)
          table.column("name", .text).notNull().unique()
          table.column("xml", .text).notNull()
          table.column("persistent", .boolean).notNull()
          table.column("autostart", .boolean).notNull().defaults(to: false)
          table.column("template", .boolean).notNull().defaults(to: false)
          table.column("state", .text).notNull()
          table.column("reason", .text).notNull()
          table.column("domain_id", .integer)
          table.column("pid", .integer)
          table.column("process_start", .integer)
          table.column("updated_at", .double).notNull()
        }
        try db.create(table: "counter") { table in
          table.primaryKey("name", .text)
          table.column("value", .integer).notNull()
        }
      }
      try migrator.migrate(database)
    } catch {
      throw .database("\(path): \(error)")
    }
  }

  private func run<T>(_ body: (Database) throws -> T) throws(RegistryError) -> T {
    do {
      return try database.write(body)
    } catch let error as RegistryError {
      throw error
    } catch {
      throw .database("\(error)")
    }
  }

  /// Every domain, by name.
  public func all() throws(RegistryError) -> [DomainRecord] {
    try run { db in try DomainRecord.order(Column("name")).fetchAll(db) }
  }

  /// The domain with this name, or nil.
  public func record(named name: String) throws(RegistryError) -> DomainRecord? {
    try run { db in try DomainRecord.filter(Column("name") == name).fetchOne(db) }
  }

  /// The domain with this UUID, or nil.
  public func record(uuid: String) throws(RegistryError) -> DomainRecord? {
    try run { db in try DomainRecord.fetchOne(db, key: uuid) }
  }

  /// Adds a domain, refusing a taken name or UUID — unless `replacing` names the same domain
  /// (same name and UUID), which redefines it and keeps its state.
  @discardableResult
  public func define(_ record: DomainRecord) throws(RegistryError) -> DomainRecord {
    try run { db in
      let byName = try DomainRecord.filter(Column("name") == record.name).fetchOne(db)
      let byUUID = try DomainRecord.fetchOne(db, key: record.uuid)
      if let byName, byName.uuid != record.uuid { throw RegistryError.nameTaken(record.name, uuid: byName.uuid) }
      if let byUUID, byUUID.name != record.name { throw RegistryError.uuidTaken(record.uuid, name: byUUID.name) }
      var stored = record
      if let existing = byUUID {
        stored.state = existing.state
        stored.reason = existing.reason
        stored.domainID = existing.domainID
        stored.pid = existing.pid
        stored.processStart = existing.processStart
        stored.autostart = existing.autostart
        stored.template = existing.template
        stored.persistent = existing.persistent || record.persistent
      }
      stored.updatedAt = Date().timeIntervalSince1970
      try stored.save(db)
      return stored
    }
  }

  /// Changes one domain in one transaction; returns the new row (nil if there is no such domain).
  @discardableResult
  public func update(uuid: String, _ change: (inout DomainRecord) -> Void) throws(RegistryError) -> DomainRecord? {
    try run { db in
      guard var record = try DomainRecord.fetchOne(db, key: uuid) else { return nil }
      change(&record)
      record.updatedAt = Date().timeIntervalSince1970
      try record.update(db)
      return record
    }
  }

  /// Forgets a domain.
  public func remove(uuid: String) throws(RegistryError) {
    _ = try run { db in try DomainRecord.deleteOne(db, key: uuid) }
  }

  /// The next virsh domain id (1, 2, …; never reused while the registry lives).
  public func nextDomainID() throws(RegistryError) -> Int {
    try run { db in
      let current = try Int.fetchOne(db, sql: "SELECT value FROM counter WHERE name = 'domain_id'") ?? 0
      try db.execute(
        sql:
          "INSERT INTO counter(name, value) VALUES('domain_id', ?) ON CONFLICT(name) DO UPDATE SET value = excluded.value",
        arguments: [current + 1])
      return current + 1
    }
  }
}

extension DomainSummary {
  /// The summary of a registry row; `title` from its definition.
  public init(record: DomainRecord, title: String?) {
    self.init(
      id: record.state.isActive ? record.domainID : nil, name: record.name, uuid: record.uuid, state: record.state,
      reason: record.reason, persistent: record.persistent, autostart: record.autostart, template: record.template,
      title: title)
  }
}
