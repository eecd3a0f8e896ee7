import Glibc
import JSON
import VMM

/// One client's QMP conversation, independent of the socket: the greeting, capabilities
/// negotiation, and each request turned into exactly one reply.
///
/// Requests are checked as QEMU checks them (`qmp-spec.rst`): a JSON object with a string
/// `execute`, an object `arguments` if any, an `id` of any type that is echoed, nothing
/// else. Before `qmp_capabilities` only that command is accepted.
final class QMPSession {
  private let commands: QMPDispatch
  /// True once the client has negotiated capabilities; only then does it get events.
  private(set) var negotiated = false

  init(commands: QMPDispatch) {
    self.commands = commands
  }

  /// A session on one fixed command set.
  convenience init(commandSet: any QMPCommandSet) {
    let dispatch = QMPDispatch()
    dispatch.use(commandSet)
    self.init(commands: dispatch)
  }

  /// The greeting sent when the client connects.
  static var greeting: [UInt8] {
    QMPMessage.encode(["QMP": ["version": QMPCommands.version, "capabilities": []]])
  }

  /// A reply and the work that waits until it has been sent.
  struct Reply {
    var data: [UInt8]
    var afterReply: (@Sendable () -> Void)?
  }

  /// Handles the bytes of one top-level JSON value.
  func handle(_ bytes: [UInt8]) -> Reply {
    let parsed: JSONValue
    do {
      parsed = try JSONValue.parse(bytes)
    } catch {
      return reply(error: QMPError(.genericError, "JSON parse error, \(Self.parseProblem(bytes))"), id: nil)
    }
    guard let request = parsed.object else {
      return reply(error: QMPError(.genericError, "QMP input must be a JSON object"), id: nil)
    }
    let id = request["id"]
    do throws(QMPError) {
      let (name, arguments) = try Self.validate(request)
      if name == "qmp_capabilities" {
        return Reply(data: try negotiate(arguments, id: id), afterReply: nil)
      }
      guard negotiated else {
        throw QMPError(.commandNotFound, "Expecting capabilities negotiation with 'qmp_capabilities'")
      }
      let outcome = try commands.execute(name, arguments: arguments)
      return Reply(
        data: QMPMessage.encode(QMPMessage.withID(["return": outcome.value], id)), afterReply: outcome.afterReply)
    } catch {
      return reply(error: error, id: id)
    }
  }

  private func negotiate(_ arguments: [String: JSONValue], id: JSONValue?) throws(QMPError) -> [UInt8] {
    guard !negotiated else {
      throw QMPError(.commandNotFound, "Capabilities negotiation is already complete, command ignored")
    }
    let checked = try QMPArguments(arguments, allowed: ["enable"])
    if let wanted = try checked.stringArray("enable"), let first = wanted.first {
      throw QMPError(.genericError, "Capability '\(first)' not available")
    }
    negotiated = true
    return QMPMessage.encode(QMPMessage.withID(["return": [:]], id))
  }

  private static func validate(_ request: [String: JSONValue]) throws(QMPError) -> (String, [String: JSONValue]) {
    for key in request.keys.sorted() where !["execute", "arguments", "id"].contains(key) {
      if key == "exec-oob" { throw QMPError(.genericError, "QMP input member 'exec-oob' is unexpected") }
      throw QMPError(.genericError, "QMP input member '\(key)' is unexpected")
    }
    guard let execute = request["execute"] else { throw QMPError(.genericError, "QMP input lacks member 'execute'") }
    guard let name = execute.string else {
      throw QMPError(.genericError, "QMP input member 'execute' must be a string")
    }
    var arguments: [String: JSONValue] = [:]
    if let given = request["arguments"] {
      guard let object = given.object else {
        throw QMPError(.genericError, "QMP input member 'arguments' must be an object")
      }
      arguments = object
    }
    return (name, arguments)
  }

  private func reply(error: QMPError, id: JSONValue?) -> Reply {
    Reply(data: QMPMessage.encode(QMPMessage.withID(["error": error.json], id)), afterReply: nil)
  }

  /// A short, printable view of what could not be parsed.
  private static func parseProblem(_ bytes: [UInt8]) -> String {
    let printable = bytes.prefix(32).map { $0 >= 0x20 && $0 < 0x7F ? Character(UnicodeScalar($0)) : "?" }
    return "invalid input '\(String(printable))\(bytes.count > 32 ? "…" : "")'"
  }
}

/// Encoding of QMP messages: one JSON object per line, "\r\n"-terminated as QEMU sends them.
enum QMPMessage {
  static func encode(_ message: [String: JSONValue]) -> [UInt8] {
    JSONValue.object(message).compactText + [0x0D, 0x0A]
  }

  static func withID(_ message: [String: JSONValue], _ id: JSONValue?) -> [String: JSONValue] {
    guard let id else { return message }
    var result = message
    result["id"] = id
    return result
  }

  /// The event message for `event`, stamped with the current time.
  static func event(_ event: MachineEvent) -> [UInt8] {
    var time = timeval()
    gettimeofday(&time, nil)
    var message: [String: JSONValue] = [
      "timestamp": ["seconds": .number(time.tv_sec), "microseconds": .number(time.tv_usec)]
    ]
    switch event {
    case .stopped: message["event"] = "STOP"
    case .resumed: message["event"] = "RESUME"
    case .powerdown: message["event"] = "POWERDOWN"
    case .reset(let cause):
      message["event"] = "RESET"
      message["data"] = ["guest": .bool(cause.byGuest), "reason": .string(cause.rawValue)]
    case .shutdown(let cause):
      message["event"] = "SHUTDOWN"
      message["data"] = ["guest": .bool(cause.byGuest), "reason": .string(cause.rawValue)]
    case .migration(let status):
      message["event"] = "MIGRATION"
      message["data"] = ["status": .string(status.rawValue)]
    case .migrationPass(let pass):
      message["event"] = "MIGRATION_PASS"
      message["data"] = ["pass": .number(pass)]
    case .job(let id, let status):
      message["event"] = "JOB_STATUS_CHANGE"
      message["data"] = ["id": .string(id), "status": .string(status)]
    }
    return encode(message)
  }
}
