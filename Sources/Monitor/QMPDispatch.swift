import JSON
import Synchronization

/// A set of QMP commands a session can run.
protocol QMPCommandSet: AnyObject, Sendable {
  /// Every command name, `qmp_capabilities` included, sorted.
  var names: [String] { get }
  /// Runs `name`; `CommandNotFound` if there is no such command.
  func execute(_ name: String, arguments: [String: JSONValue]) throws(QMPError) -> QMPCommands.Outcome
}

/// The command set every session uses now. A destination waiting for its migration
/// (`--incoming defer`) answers with the waiting set, then — the machine built — the server
/// switches every session, connected or not, to the machine's commands.
final class QMPDispatch: Sendable {
  private let current = Mutex<(any QMPCommandSet)?>(nil)

  /// Makes `commands` the set sessions use from now on.
  func use(_ commands: any QMPCommandSet) { current.withLock { $0 = commands } }

  /// Whether a command set is there yet.
  var isReady: Bool { current.withLock { $0 != nil } }

  func execute(_ name: String, arguments: [String: JSONValue]) throws(QMPError) -> QMPCommands.Outcome {
    guard let commands = current.withLock({ $0 }) else {
      throw QMPError(.genericError, "the monitor has no machine to drive yet")
    }
    return try commands.execute(name, arguments: arguments)
  }
}
