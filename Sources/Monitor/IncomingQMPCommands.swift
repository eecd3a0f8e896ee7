import JSON
import VMM

/// The commands of a destination waiting for its machine (`skvm run --incoming defer`): the
/// machine does not exist until the source sends it, so only what QEMU's destination answers
/// in its `inmigrate` state makes sense — `migrate-incoming` to start listening,
/// `query-migrate`, `query-status`, `quit`, and their HMP forms.
final class IncomingQMPCommands: QMPCommandSet, @unchecked Sendable {
  private typealias Handler = ([String: JSONValue]) throws(QMPError) -> QMPCommands.Outcome
  private let incoming: DeferredIncoming
  private var table: [String: Handler] = [:]

  init(incoming: DeferredIncoming) {
    self.incoming = incoming
    table = [
      "query-version": { arguments throws(QMPError) in
        _ = try QMPArguments(arguments, allowed: [])
        return .init(value: QMPCommands.version)
      },
      "query-commands": { [unowned self] arguments throws(QMPError) in
        _ = try QMPArguments(arguments, allowed: [])
        return .init(value: .array(self.names.map { ["name": .string($0)] }))
      },
      "query-status": { arguments throws(QMPError) in
        _ = try QMPArguments(arguments, allowed: [])
        return .init(value: ["running": false, "singlestep": false, "status": "inmigrate"])
      },
      "query-migrate": { [unowned self] arguments throws(QMPError) in
        _ = try QMPArguments(arguments, allowed: [])
        let status = self.incoming.status
        guard status != .none else { return .init(value: [:]) }
        var reply: [String: JSONValue] = ["status": .string(status.rawValue)]
        // As QEMU: where it listens, so that a manager that asked for port 0 learns the port.
        if let listening = self.incoming.listening {
          reply["socket-address"] = [
            ["type": "inet", "host": .string(listening.host), "port": .string(String(listening.port))]
          ]
        }
        return .init(value: .object(reply))
      },
      "migrate-incoming": { [unowned self] arguments throws(QMPError) in
        let checked = try QMPArguments(arguments, allowed: ["uri"])
        try self.listen(try checked.requiredString("uri"))
        return .init(value: [:])
      },
      "quit": { [unowned self] arguments throws(QMPError) in
        _ = try QMPArguments(arguments, allowed: [])
        let incoming = self.incoming
        return .init(value: [:]) { incoming.quit() }
      },
      "human-monitor-command": { [unowned self] arguments throws(QMPError) in
        let checked = try QMPArguments(arguments, allowed: ["command-line", "cpu-index"])
        return try self.human(try checked.requiredString("command-line"))
      },
    ]
  }

  var names: [String] { (Array(table.keys) + ["qmp_capabilities"]).sorted() }

  func execute(_ name: String, arguments: [String: JSONValue]) throws(QMPError) -> QMPCommands.Outcome {
    guard let handler = table[name] else {
      throw QMPError(
        .genericError,
        "\(name) needs the machine, which is not here yet: skvm waits for an incoming migration "
          + "(migrate-incoming tcp:HOST:PORT starts listening)")
    }
    return try handler(arguments)
  }

  /// Starts listening on `uri` (`tcp:[HOST]:PORT`).
  private func listen(_ uri: String) throws(QMPError) {
    let address: MigrationAddress
    do { address = try MigrationAddress(parsing: uri, listening: true) } catch {
      throw QMPError(.genericError, "Invalid migration URI \(error.description)")
    }
    do { try incoming.listen(on: address) } catch { throw QMPError(.genericError, error.description) }
  }

  /// The human monitor's forms: `migrate_incoming URI`, `info status`, `info migrate`, `quit`.
  private func human(_ line: String) throws(QMPError) -> QMPCommands.Outcome {
    let words = line.split(whereSeparator: { $0 == " " || $0 == "\t" }).map(String.init)
    switch (words.first, words.dropFirst().first) {
    case ("migrate_incoming", let uri?):
      do throws(QMPError) { try listen(uri) } catch { return .init(value: .string("Error: \(error.description)\r\n")) }
      return .init(value: "")
    case ("info", "status"):
      return .init(value: "VM status: paused (inmigrate)\r\n")
    case ("info", "migrate"):
      let status = incoming.status
      return .init(value: status == .none ? "" : .string("Migration status: \(status.rawValue)\r\n"))
    case ("quit", _), ("q", _):
      let incoming = self.incoming
      return .init(value: "") { incoming.quit() }
    case ("help", _), ("?", _):
      return .init(
        value: """
          migrate_incoming uri -- listen for the incoming migration on tcp:[HOST]:PORT\r
          info migrate -- show migration status\r
          info status -- show the current VM status\r
          quit|q -- quit the emulator\r

          """)
    default:
      return .init(
        value: .string(
          "\(words.first ?? ""): not available until the machine has arrived (migrate_incoming tcp:HOST:PORT)\r\n"))
    }
  }
}
