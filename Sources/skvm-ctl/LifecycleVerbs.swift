import ArgumentParser
import FoundationEssentials
import Glibc
import ManagementModel

/// A verb that acts on one domain and prints virsh's sentence for it.
protocol DomainAction: AsyncParsableCommand {
  var domain: String { get }
  static var action: String { get }
  static func sentence(_ name: String) -> String
}

extension DomainAction {
  func run() async throws {
    let body = try await Connection.call(.POST, Connection.domainPath(domain, "/\(Self.action)"))
    let summary = try Connection.decode(DomainSummary.self, body)
    say(Self.sentence(summary.name))
  }
}

struct Start: AsyncParsableCommand {
  static let configuration = CommandConfiguration(commandName: "start", abstract: "Start a defined (inactive) domain.")
  @Argument(help: "The domain's name, UUID or id.") var domain: String
  @Flag(help: "Attach to its serial console once it runs.") var console = false

  func run() async throws {
    let body = try await Connection.call(.POST, Connection.domainPath(domain, "/start"))
    let name = try Connection.decode(DomainSummary.self, body).name
    say("Domain '\(name)' started")
    if console { try await Console.attach(name) }
  }
}

struct Destroy: DomainAction {
  static let configuration = CommandConfiguration(
    commandName: "destroy", abstract: "Stop a domain at once (its guest gets no warning).")
  @Argument(help: "The domain's name, UUID or id.") var domain: String
  static let action = "destroy"
  static func sentence(_ name: String) -> String { "Domain '\(name)' destroyed" }
}

struct Reboot: DomainAction {
  static let configuration = CommandConfiguration(
    commandName: "reboot", abstract: "Reboot a domain: the guest is asked to power off (ACPI) and started again.")
  @Argument(help: "The domain's name, UUID or id.") var domain: String
  static let action = "reboot"
  static func sentence(_ name: String) -> String { "Domain '\(name)' is being rebooted" }
}

struct Reset: DomainAction {
  static let configuration = CommandConfiguration(
    commandName: "reset", abstract: "Reset a domain at once, as its reset button.")
  @Argument(help: "The domain's name, UUID or id.") var domain: String
  static let action = "reset"
  static func sentence(_ name: String) -> String { "Domain '\(name)' was reset" }
}

struct Suspend: DomainAction {
  static let configuration = CommandConfiguration(commandName: "suspend", abstract: "Pause a running domain.")
  @Argument(help: "The domain's name, UUID or id.") var domain: String
  static let action = "suspend"
  static func sentence(_ name: String) -> String { "Domain '\(name)' suspended" }
}

struct Resume: DomainAction {
  static let configuration = CommandConfiguration(commandName: "resume", abstract: "Resume a paused domain.")
  @Argument(help: "The domain's name, UUID or id.") var domain: String
  static let action = "resume"
  static func sentence(_ name: String) -> String { "Domain '\(name)' resumed" }
}

struct Shutdown: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "shutdown", abstract: "Ask a domain to power off (the ACPI power button).",
    discussion: "With --timeout, waits until it is shut off and fails if it is not within that many seconds.")
  @Argument(help: "The domain's name, UUID or id.") var domain: String
  @Option(help: ArgumentHelp("Wait this many seconds for it to shut off.", valueName: "seconds")) var timeout: Int?

  func run() async throws {
    let body = try await Connection.call(.POST, Connection.domainPath(domain, "/shutdown"))
    let summary = try Connection.decode(DomainSummary.self, body)
    say("Domain '\(summary.name)' is being shutdown")
    guard let timeout else { return }
    let deadline = Date().addingTimeInterval(Double(timeout))
    while Date() < deadline {
      let info = try Connection.decode(
        DomainInfo.self, try await Connection.call(.GET, Connection.domainPath(summary.uuid)))
      if !info.summary.state.isActive { return }
      try await Task.sleep(for: .milliseconds(100))
    }
    throw CLIError("domain '\(summary.name)' did not shut off within \(timeout) seconds")
  }
}

struct Create: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "create", abstract: "Create and start a transient domain from an XML file (forgotten when it stops).")
  @Argument(help: "The domain XML file.") var file: String

  func run() async throws {
    let xml = try readDefinition(file)
    let body = try await Connection.call(.POST, "/v1/transient-domains", body: xml, contentType: "application/xml")
    say("Domain '\(try Connection.decode(DomainSummary.self, body).name)' created from \(file)")
  }
}

/// The bytes of a domain XML file (at most 1 MiB), or a clear error.
func readDefinition(_ file: String) throws -> [UInt8] {
  let fd = open(file, O_RDONLY | O_CLOEXEC)
  guard fd >= 0 else { throw CLIError("failed to read \(file): \(String(cString: strerror(errno)))") }
  defer { close(fd) }
  var bytes: [UInt8] = []
  var chunk = [UInt8](repeating: 0, count: 65536)
  while bytes.count <= 1 << 20 {
    let count = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
    if count < 0 && errno == EINTR { continue }
    if count < 0 { throw CLIError("failed to read \(file): \(String(cString: strerror(errno)))") }
    if count == 0 { break }
    bytes += chunk[0..<count]
  }
  if bytes.count > 1 << 20 { throw CLIError("\(file) is larger than 1 MiB: not a domain definition") }
  return bytes
}
