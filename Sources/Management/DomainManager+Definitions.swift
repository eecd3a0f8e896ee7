import DiskImage
import DomainXML
import Foundation
import Glibc
import JSON
import ManagementModel
import Network

/// Definitions: define, undefine, autostart, templates, clones.
extension DomainManager {

  /// `define`: stores (or redefines) a persistent domain.
  public func define(_ xml: [UInt8]) throws(ManagementError) -> DefineResult {
    var (record, warnings) = try parseForDefinition(xml)
    record.persistent = true
    let stored = try registryCall { () throws(RegistryError) in try registry.define(record) }
    publish(stored, "Defined", record.state == .shutOff ? "Added" : "Updated")
    return DefineResult(domain: summary(stored), warnings: warnings)
  }

  func parseForDefinition(_ xml: [UInt8]) throws(ManagementError) -> (DomainRecord, [String]) {
    let parsed: DomainXML.Parsed
    do {
      parsed = try DomainXML.parse(xml)
    } catch {
      throw ManagementError(.invalidDefinition, "invalid domain XML: \(error)")
    }
    var definition = parsed.definition
    var warnings = parsed.warnings
    // Stable per domain (its UUID) and NIC, in QEMU's 52:54:00 range.
    for index in definition.interfaces.indices where definition.interfaces[index].mac == nil {
      definition.interfaces[index].mac =
        MACAddress.generated(name: definition.uuid.uuidString.lowercased(), index: index).description
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
    for index in definition.interfaces.indices {
      definition.interfaces[index].mac =
        MACAddress.generated(name: definition.uuid.uuidString.lowercased(), index: index).description
    }
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
}
