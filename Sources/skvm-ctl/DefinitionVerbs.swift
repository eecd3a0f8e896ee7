import ArgumentParser
import FoundationEssentials
import Glibc
import ManagementClient
import ManagementModel

struct Define: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "define", abstract: "Define (or redefine) a domain from an XML file.")
  @Argument(help: "The domain XML file.") var file: String

  func run() async throws {
    let body = try await Connection.call(
      .POST, "/v1/domains", body: try readDefinition(file), contentType: "application/xml")
    let result = try Connection.decode(DefineResult.self, body)
    for warning in result.warnings { writeError(Array("warning: \(warning)\n".utf8)) }
    say("Domain '\(result.domain.name)' defined from \(file)")
  }
}

struct Undefine: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "undefine", abstract: "Forget a domain's definition (a running domain becomes transient and runs on).")
  @Argument(help: "The domain's name, UUID or id.") var domain: String
  @Flag(help: "Delete its disk images too (not while it runs).") var removeAllStorage = false

  func run() async throws {
    let name = try await domainName(domain)
    let body = try await Connection.call(
      .DELETE, Connection.domainPath(domain, removeAllStorage ? "?remove-all-storage=1" : ""))
    let removed = (try? Connection.decode([String: [String]].self, body))?["removed"] ?? []
    for path in removed { say("Volume '\(path)' removed.") }
    say("Domain '\(name)' has been undefined")
  }
}

struct DumpXML: AsyncParsableCommand {
  static let configuration = CommandConfiguration(commandName: "dumpxml", abstract: "Print a domain's XML definition.")
  @Argument(help: "The domain's name, UUID or id.") var domain: String

  func run() async throws {
    let body = try await Connection.call(.GET, Connection.domainPath(domain, "/xml"))
    writeOutput(body)
  }
}

/// A verb that sets a flag of a domain (`autostart`, `template`).
protocol FlagVerb: AsyncParsableCommand {
  var domain: String { get }
  var disable: Bool { get }
  static var resource: String { get }
  static func sentence(_ name: String, _ enabled: Bool) -> String
}

extension FlagVerb {
  func run() async throws {
    let body = try JSONEncoder().encode(APIFlag(enabled: !disable))
    let reply = try await Connection.call(.PUT, Connection.domainPath(domain, "/\(Self.resource)"), body: Array(body))
    say(Self.sentence(try Connection.decode(DomainSummary.self, reply).name, !disable))
  }
}

struct Autostart: FlagVerb {
  static let configuration = CommandConfiguration(
    commandName: "autostart", abstract: "Start a domain whenever the daemon starts.")
  @Argument(help: "The domain's name, UUID or id.") var domain: String
  @Flag(help: "Stop starting it.") var disable = false
  static let resource = "autostart"
  static func sentence(_ name: String, _ enabled: Bool) -> String {
    enabled ? "Domain '\(name)' marked as autostarted" : "Domain '\(name)' unmarked as autostarted"
  }
}

struct Template: FlagVerb {
  static let configuration = CommandConfiguration(
    commandName: "template", abstract: "Mark a domain a template: it is never started, only cloned.")
  @Argument(help: "The domain's name, UUID or id.") var domain: String
  @Flag(help: "Make it an ordinary domain again.") var disable = false
  static let resource = "template"
  static func sentence(_ name: String, _ enabled: Bool) -> String {
    enabled ? "Domain '\(name)' marked as a template" : "Domain '\(name)' is no longer a template"
  }
}

/// The name of the domain `reference` names.
func domainName(_ reference: String) async throws -> String {
  try Connection.decode(DomainInfo.self, try await Connection.call(.GET, Connection.domainPath(reference))).summary.name
}

struct Clone: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "clone", abstract: "Copy a shut-off domain (or a template) to a new one (virt-clone).",
    discussion: """
      The clone gets a new name, UUID and MAC addresses, and copies of the source's writable disks beside \
      them, named after the clone. With --linked each copy is a qcow2 overlay backed by the source's image \
      (fast, small; the source's image must then stay unchanged: make the source a template).
      """)
  @Argument(help: "The domain to copy.") var source: String
  @Argument(help: "The new domain's name.") var name: String
  @Flag(help: "Overlays backed by the source's disks instead of full copies.") var linked = false

  func run() async throws {
    let request = try JSONEncoder().encode(CloneRequest(name: name, linked: linked))
    let body = try await Connection.call(.POST, Connection.domainPath(source, "/clone"), body: Array(request))
    let result = try Connection.decode(CloneResult.self, body)
    for image in result.images { say("Allocating '\(image)'") }
    say("Clone '\(result.domain.name)' created successfully.")
  }
}
