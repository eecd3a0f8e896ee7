import ArgumentParser
import Foundation
import Glibc
import Management
import ManagementAPI
import ManagementModel

/// `skvmd`: the management daemon. Keeps domain definitions, runs each domain as a `skvm run`
/// process in a session of its own, and serves the API that `skvm ctl` talks to.
@main
struct SKVMD: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "skvmd",
    abstract: "The SwiftKVM management daemon: named domains, their definitions and their processes.",
    discussion: """
      The system instance (root; libvirt's qemu:///system) keeps its registry in /var/lib/skvm and
      its sockets in /run/skvm; a per-user instance (--session; qemu:///session) uses
      $XDG_DATA_HOME/skvm and $XDG_RUNTIME_DIR/skvm. The API is HTTP/JSON on the unix socket
      skvm-sock (read-write) and skvm-sock-ro (read-only, for monitoring), both mode 0600 (0660
      with --group). Domains keep running when the daemon stops or is killed; a restarted daemon
      finds them again. SIGTERM or SIGINT stops the daemon, not the domains.
      """,
    version: "skvmd \(ManagementVersion.current)")

  @Flag(help: "The system instance (the default for root).")
  var system = false

  @Flag(help: "A per-user instance under the XDG directories (the default for other users).")
  var session = false

  @Option(help: ArgumentHelp("Keep the registry and logs here instead.", valueName: "dir"))
  var stateDir: String?

  @Option(help: ArgumentHelp("Put the sockets here instead.", valueName: "dir"))
  var runtimeDir: String?

  @Option(
    help: ArgumentHelp("The skvm executable that runs domains (default: the one beside skvmd).", valueName: "path"))
  var skvm: String?

  @Option(help: ArgumentHelp("Let this group use the sockets too (mode 0660).", valueName: "name"))
  var group: String?

  @Option(
    help: ArgumentHelp(
      "How long a domain prepared for an incoming migration waits for its source before it is destroyed.",
      valueName: "seconds"))
  var incomingTimeout: Double = 120

  func validate() throws {
    if system && session { throw ValidationError("give --system or --session, not both") }
    if !(incomingTimeout > 0 && incomingTimeout <= 86_400) {
      throw ValidationError("--incoming-timeout \(incomingTimeout): give a number of seconds above 0, at most a day")
    }
  }

  func run() async throws {
    var paths = system ? ManagementPaths.system : session ? ManagementPaths.session() : ManagementPaths.default
    if let stateDir { paths.stateDirectory = stateDir }
    if let runtimeDir { paths.runtimeDirectory = runtimeDir }
    let executable = try findSkvm()
    var groupID: gid_t?
    if let group {
      guard let entry = getgrnam(group) else { throw ValidationError("--group: there is no group '\(group)'") }
      groupID = entry.pointee.gr_gid
    }
    do {
      try paths.create()
    } catch {
      fail("cannot create \(paths.stateDirectory) and \(paths.runtimeDirectory): \(error.localizedDescription)")
    }
    if let groupID {
      // The group reaches the sockets through the runtime directory.
      chown(paths.runtimeDirectory, getuid(), groupID)
      chmod(paths.runtimeDirectory, 0o750)
    }
    let lock = lockInstance(paths)
    defer { close(lock) }
    signal(SIGPIPE, SIG_IGN)
    let manager: DomainManager
    do {
      manager = try DomainManager(
        paths: paths, skvmExecutable: executable, incomingAbandonSeconds: incomingTimeout)
    } catch {
      fail("\(error)")
    }
    for note in await manager.recover() { log(note) }
    let version = ManagementVersion.current
    let instance = paths
    let socketGroup = groupID
    log("listening on \(paths.socket) and \(paths.readOnlySocket) (skvm: \(executable))")
    try await withThrowingTaskGroup(of: Void.self) { tasks in
      tasks.addTask {
        try await APIServer.run(
          router: APIRouter(manager: manager, readOnly: false, version: version), socketPath: instance.socket,
          groupID: socketGroup)
      }
      tasks.addTask {
        try await APIServer.run(
          router: APIRouter(manager: manager, readOnly: true, version: version), socketPath: instance.readOnlySocket,
          groupID: socketGroup)
      }
      tasks.addTask { await Self.waitForStopSignal() }
      // The first to end (a signal, or a server that failed) ends the daemon; domains run on.
      try await tasks.next()
      tasks.cancelAll()
    }
    unlink(paths.socket)
    unlink(paths.readOnlySocket)
    log("stopped; running domains keep running")
  }

  /// Returns when SIGTERM or SIGINT arrives.
  static func waitForStopSignal() async {
    let (stream, continuation) = AsyncStream<Int32>.makeStream()
    var sources: [any DispatchSourceSignal] = []
    for number in [SIGTERM, SIGINT] {
      signal(number, SIG_IGN)
      let source = DispatchSource.makeSignalSource(signal: number, queue: .global())
      source.setEventHandler { continuation.yield(number) }
      source.resume()
      sources.append(source)
    }
    for await _ in stream { break }
    for source in sources { source.cancel() }
  }

  /// One daemon per instance: an exclusive lock on skvmd.pid in the runtime directory.
  func lockInstance(_ paths: ManagementPaths) -> Int32 {
    let path = paths.runtimeDirectory + "/skvmd.pid"
    let fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o600)
    guard fd >= 0 else { fail("cannot open \(path): \(String(cString: strerror(errno)))") }
    if flock(fd, LOCK_EX | LOCK_NB) != 0 {
      var buffer = [UInt8](repeating: 0, count: 32)
      let count = read(fd, &buffer, buffer.count)
      let pid = String(decoding: buffer.prefix(max(0, count)), as: UTF8.self).trimmingCharacters(
        in: .whitespacesAndNewlines)
      fail("another skvmd (pid \(pid)) serves \(paths.runtimeDirectory); stop it first")
    }
    ftruncate(fd, 0)
    let text = Array("\(getpid())\n".utf8)
    _ = text.withUnsafeBytes { pwrite(fd, $0.baseAddress, $0.count, 0) }
    return fd
  }

  func findSkvm() throws -> String {
    if let skvm {
      guard access(skvm, X_OK) == 0 else { throw ValidationError("--skvm: \(skvm) is not an executable file") }
      return skvm
    }
    let own = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
    let beside = URL(fileURLWithPath: own).deletingLastPathComponent().appendingPathComponent("skvm").path
    if access(beside, X_OK) == 0 { return beside }
    for directory in (ProcessInfo.processInfo.environment["PATH"] ?? "").split(separator: ":") {
      let candidate = "\(directory)/skvm"
      if access(candidate, X_OK) == 0 { return candidate }
    }
    throw ValidationError("cannot find skvm beside skvmd or on PATH: give its path with --skvm")
  }

  func log(_ message: String) {
    FileHandle.standardError.write(Data("skvmd: \(message)\n".utf8))
  }

  func fail(_ message: String) -> Never {
    log(message)
    Foundation.exit(1)
  }
}
