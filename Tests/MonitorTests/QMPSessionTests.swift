import Devices
import JSON
import Testing
import VMM

@testable import Monitor

/// The protocol rules of qmp-spec.rst, against a machine that is built but never run.
@Suite("QMP sessions")
struct QMPSessionTests {
  private static func session() throws -> QMPSession {
    let machine = try ManagedMachine(
      configuration: .init(boot: .flatImage(bytes: [0xF4], entry: .real)), console: DiscardedConsoleOutput())
    return QMPSession(commandSet: QMPCommands(machine: machine, monitorAddresses: [], serialBackend: "null"))
  }

  private func send(_ session: QMPSession, _ text: String) throws -> JSONValue {
    let reply = session.handle(Array(text.utf8))
    #expect(reply.data.suffix(2) == [0x0D, 0x0A], "one message a line, as QEMU sends them")
    let message = try JSONValue.parse(Array(reply.data.dropLast(2)))
    #expect(message.object != nil)
    return message
  }

  private func errorDescription(_ reply: JSONValue) -> String? {
    reply["error"]?["desc"]?.string
  }

  @Test("The greeting carries a version and no capabilities")
  func greeting() throws {
    let greeting = try JSONValue.parse(QMPSession.greeting)
    let qmp = try #require(greeting["QMP"])
    #expect(qmp["capabilities"] == [])
    #expect(qmp["version"]?["package"]?.string == "SwiftKVM \(SwiftKVMVersion.current)")
    #expect(QMPSession.greeting.suffix(2) == [0x0D, 0x0A])
  }

  @Test("Commands before qmp_capabilities fail as in QEMU; negotiation happens once")
  func negotiation() throws {
    let session = try Self.session()
    let early = try send(session, #"{"execute": "query-status"}"#)
    #expect(early["error"]?["class"] == "CommandNotFound")
    #expect(errorDescription(early) == "Expecting capabilities negotiation with 'qmp_capabilities'")
    let oob = try send(session, #"{"execute": "qmp_capabilities", "arguments": {"enable": ["oob"]}}"#)
    #expect(errorDescription(oob) == "Capability 'oob' not available")
    #expect(!session.negotiated)
    let done = try send(session, #"{"execute": "qmp_capabilities", "id": {"any": ["json", 1]}}"#)
    #expect(done["return"] != nil)
    #expect(done["id"] == ["any": ["json", 1]], "the id is echoed whatever its type")
    #expect(session.negotiated)
    let again = try send(session, #"{"execute": "qmp_capabilities"}"#)
    #expect(errorDescription(again) == "Capabilities negotiation is already complete, command ignored")
  }

  @Test(
    "Malformed requests get QEMU's error descriptions",
    arguments: [
      (#"{"execute": }"#, "JSON parse error"),
      (#"[1]"#, "QMP input must be a JSON object"),
      (#"{"id": 1}"#, "QMP input lacks member 'execute'"),
      (#"{"execute": 1}"#, "QMP input member 'execute' must be a string"),
      (#"{"execute": "query-status", "arguments": []}"#, "QMP input member 'arguments' must be an object"),
      (#"{"execute": "query-status", "extra": 1}"#, "QMP input member 'extra' is unexpected"),
      (#"{"execute": "nope"}"#, "The command nope has not been found"),
      (#"{"execute": "query-status", "arguments": {"x": 1}}"#, "Parameter 'x' is unexpected"),
      (#"{"execute": "human-monitor-command"}"#, "Parameter 'command-line' is missing"),
      (
        #"{"execute": "human-monitor-command", "arguments": {"command-line": true}}"#,
        "Invalid parameter type for 'command-line', expected: string"
      ),
      (
        #"{"execute": "human-monitor-command", "arguments": {"command-line": "info kvm", "cpu-index": "0"}}"#,
        "Invalid parameter type for 'cpu-index', expected: integer"
      ),
    ])
  func malformed(_ request: String, _ expected: String) throws {
    let session = try Self.session()
    _ = try send(session, #"{"execute": "qmp_capabilities"}"#)
    let reply = try send(session, request)
    let description = try #require(errorDescription(reply), "\(reply)")
    #expect(description.hasPrefix(expected), "\(description)")
  }

  @Test("Queries answer with QEMU's shapes")
  func queries() throws {
    let session = try Self.session()
    _ = try send(session, #"{"execute": "qmp_capabilities"}"#)
    let status = try #require(try send(session, #"{"execute": "query-status"}"#)["return"])
    #expect(status["status"] == "running")
    #expect(status["running"] == true)
    let kvm = try #require(try send(session, #"{"execute": "query-kvm"}"#)["return"])
    #expect(kvm == ["enabled": true, "present": true])
    let hmp = try send(
      session, #"{"execute": "human-monitor-command", "arguments": {"command-line": "info kvm"}}"#)
    #expect(hmp["return"] == "kvm support: enabled\r\n")
    let unknown = try send(
      session, #"{"execute": "human-monitor-command", "arguments": {"command-line": "frobnicate"}}"#)
    #expect(unknown["return"] == "unknown command: 'frobnicate'\r\n")
  }
}
