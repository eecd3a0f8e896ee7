import ArgumentParser
import FoundationEssentials
import ManagementModel

/// `migrate DOMAIN DESTURI [MIGRATEURI]`: moves a running domain to another daemon, as virsh's
/// client-driven migration: the destination daemon prepares (its process listens), the source
/// daemon sends the machine, and the domain's definition goes with it. Storage is shared (the
/// same image paths on both sides); on failure the domain keeps running where it was.
struct Migrate: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "migrate",
    abstract: "Move a running domain to another skvmd (live with --live); its disks must be shared storage.",
    discussion: """
      DESTURI names the destination daemon as -c does (system, session, qemu:///system, qemu:///session, or \
      its socket path; a remote daemon's socket forwarded with ssh -L works too). MIGRATEURI (tcp:HOST[:PORT]) is \
      where the destination listens for the machine; loopback and a free port unless given — give the \
      destination host's address when the source runs elsewhere. Without --live the guest is paused while its \
      memory is copied; with --timeout a live copy that has not finished after that many seconds pauses the \
      guest so that it finishes. The domain is transient at the destination unless --persistent, and stays \
      defined (shut off, migrated) at the source unless --undefinesource.
      """)

  @Argument(help: "The domain's name, UUID or id.") var domain: String
  @Argument(help: "The destination daemon (as -c).") var desturi: String
  @Argument(help: "Where the destination listens: tcp:HOST[:PORT].") var migrateuri: String?
  @Flag(help: "Keep the guest running while its memory is copied.") var live = false
  @Flag(help: "Define the domain persistently at the destination.") var persistent = false
  @Flag(help: "Forget the domain at the source once it runs at the destination.") var undefinesource = false
  @Flag(help: "Leave the domain paused at the destination.") var suspend = false
  @Option(help: ArgumentHelp("Pause the guest after this many seconds of live copying.", valueName: "seconds"))
  var timeout: Int?
  @Flag(help: "The default: with --timeout, the guest is paused (accepted for virsh's scripts).")
  var timeoutSuspend = false
  @Flag(help: "Not supported: disks are not copied (use shared storage).") var copyStorageAll = false
  @Flag(help: "Not supported: a domain that is not running has only its definition to move (dumpxml, define).")
  var offline = false

  func validate() throws {
    if copyStorageAll {
      throw ValidationError("--copy-storage-all: skvm does not copy disks; put them on storage both hosts share")
    }
    if offline {
      throw ValidationError(
        "--offline: move a shut-off domain's definition with 'dumpxml' on the source and 'define' on the destination")
    }
    if let timeout, timeout < 1 {
      throw ValidationError("--timeout \(timeout): give a number of seconds of at least 1")
    }
    if timeout != nil && !live { throw ValidationError("--timeout applies to live migration: add --live") }
  }

  func run() async throws {
    let source = try Connection.socketPath()
    let destination = try Connection.socketPath(of: desturi)
    if source == destination {
      throw CLIError("the destination \(desturi) is the daemon the domain runs on: migrate to another one")
    }
    let xml = String(decoding: try await Connection.call(.GET, Connection.domainPath(domain, "/xml")), as: UTF8.self)
    let prepare = IncomingMigrationRequest(xml: xml, persistent: persistent, listen: migrateuri, suspend: suspend)
    let prepared = try Connection.decode(
      IncomingMigrationReply.self,
      try await Connection.call(.POST, "/v1/incoming-migrations", body: try encode(prepare), socket: destination))
    let arriving = prepared.domain
    let request = MigrationRequest(uri: prepared.uri, live: live, timeout: timeout, undefineSource: undefinesource)
    do {
      _ = try await Connection.call(.POST, Connection.domainPath(domain, "/migrate"), body: try encode(request))
    } catch {
      // The destination's waiting process goes; the domain runs on here.
      _ = try? await Connection.call(.POST, Connection.domainPath(arriving.uuid, "/destroy"), socket: destination)
      throw error
    }
    // The source is done once the destination has the machine; wait until it runs there.
    let deadline = Date().addingTimeInterval(30)
    while Date() < deadline {
      let body = try await Connection.call(.GET, Connection.domainPath(arriving.uuid), socket: destination)
      let state = try Connection.decode(DomainInfo.self, body).summary
      if state.state == .running || (state.state == .paused && state.reason != .migrating) { return }
      if !state.state.isActive {
        throw CLIError("domain '\(state.name)' left the source but ended on the destination (\(state.reason.rawValue))")
      }
      try await Task.sleep(for: .milliseconds(10))
    }
    throw CLIError("domain '\(arriving.name)' was sent, but the destination did not report it running within 30 s")
  }

  private func encode<T: Encodable>(_ value: T) throws -> [UInt8] { Array(try JSONEncoder().encode(value)) }
}
