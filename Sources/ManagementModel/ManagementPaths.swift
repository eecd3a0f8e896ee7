import FoundationEssentials
import Glibc

/// Where a daemon instance keeps its registry, logs and sockets: the system instance under
/// `/var/lib/skvm` and `/run/skvm` (root; libvirt's `qemu:///system`), a per-user one under the
/// XDG directories (`qemu:///session`).
public struct ManagementPaths: Sendable, Equatable {
  /// The registry and the domains' logs.
  public var stateDirectory: String
  /// The sockets: the daemon's and each running domain's monitor.
  public var runtimeDirectory: String

  public init(stateDirectory: String, runtimeDirectory: String) {
    self.stateDirectory = stateDirectory
    self.runtimeDirectory = runtimeDirectory
  }

  /// The system instance's directories.
  public static let system = ManagementPaths(stateDirectory: "/var/lib/skvm", runtimeDirectory: "/run/skvm")

  /// The per-user instance's directories: `$XDG_DATA_HOME/skvm` (or `~/.local/share/skvm`) and
  /// `$XDG_RUNTIME_DIR/skvm` (or `/tmp/skvm-UID`).
  public static func session(environment: [String: String] = ProcessInfo.processInfo.environment) -> ManagementPaths {
    let home = environment["HOME"] ?? getpwuid(getuid()).map { String(cString: $0.pointee.pw_dir) } ?? "/"
    let data = environment["XDG_DATA_HOME"].flatMap { $0.hasPrefix("/") ? $0 : nil } ?? home + "/.local/share"
    let runtime = environment["XDG_RUNTIME_DIR"].flatMap { $0.hasPrefix("/") ? $0 : nil } ?? "/tmp/skvm-\(getuid())"
    return ManagementPaths(stateDirectory: data + "/skvm", runtimeDirectory: runtime + "/skvm")
  }

  /// The instance a connection name picks: `system`, `session` (or libvirt's `qemu:///system`,
  /// `qemu:///session`); nil for anything else.
  public static func named(_ name: String) -> ManagementPaths? {
    switch name {
    case "system", "qemu:///system", "skvm:///system": .system
    case "session", "qemu:///session", "skvm:///session": session()
    default: nil
    }
  }

  /// The instance a plain `skvm ctl` talks to: the system one for root, the session one otherwise.
  public static var `default`: ManagementPaths { getuid() == 0 ? .system : session() }

  public var database: String { stateDirectory + "/domains.sqlite" }
  public var logDirectory: String { stateDirectory + "/log" }
  /// The read-write API socket (mode 0600).
  public var socket: String { runtimeDirectory + "/skvm-sock" }
  /// The read-only API socket, for monitoring (mode 0600).
  public var readOnlySocket: String { runtimeDirectory + "/skvm-sock-ro" }
  /// Running domains' monitor sockets.
  public var domainDirectory: String { runtimeDirectory + "/domains" }

  /// The log of a domain's serial console and its process's messages.
  public func log(for name: String) -> String { logDirectory + "/\(name).log" }
  /// A running domain's serial console socket (`skvm ctl console`).
  public func console(for uuid: String) -> String { domainDirectory + "/\(uuid).console" }
  /// The daemon's QMP socket to a running domain.
  public func monitor(for uuid: String) -> String { domainDirectory + "/\(uuid).qmp" }

  /// Creates the directories, private to this user (0700).
  public func create() throws {
    for directory in [stateDirectory, logDirectory, runtimeDirectory, domainDirectory] {
      try FileManager.default.createDirectory(
        atPath: directory, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
    }
  }
}

/// The version the daemon and the CLI report (SwiftKVM's; a test keeps the two equal).
public enum ManagementVersion {
  public static let current = "0.1.0"
}
