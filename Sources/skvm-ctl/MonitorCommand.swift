import ArgumentParser
import FoundationEssentials
import Glibc
import JSON
import ManagementClient
import ManagementModel

struct MonitorCommand: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "qemu-monitor-command",
    abstract: "Run a command on a running domain's monitor: QMP JSON, or a human-monitor line with --hmp.")
  @Argument(help: "The domain's name, UUID or id.") var domain: String
  @Flag(help: "The command is a human-monitor (HMP) command line.") var hmp = false
  @Flag(help: "Pretty-print a QMP reply.") var pretty = false
  @Argument(parsing: .remaining, help: "The command.") var command: [String]

  func run() async throws {
    guard !command.isEmpty else { throw CLIError("give a command, e.g. --hmp 'info status'") }
    let request = APIMonitorRequest(command: command.joined(separator: " "), hmp: hmp)
    let body = try await Connection.call(
      .POST, Connection.domainPath(domain, "/monitor"), body: Array(try JSONEncoder().encode(request)))
    let reply = try JSONValue.parse(body)
    if hmp {
      writeOutput(Array((reply.string ?? "").utf8))
    } else {
      let wrapped: JSONValue = ["return": reply]
      say(pretty ? wrapped.prettyText : String(decoding: wrapped.compactText, as: UTF8.self))
    }
  }
}

struct Event: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "event", abstract: "Print domains' lifecycle events as they happen.",
    discussion: "Without --loop, ends after the first event; --timeout ends after that many seconds.")
  @Option(help: ArgumentHelp("Only this domain's events.", valueName: "domain")) var domain: String?
  @Flag(help: "Keep printing events until interrupted.") var loop = false
  @Option(help: ArgumentHelp("Stop after this many seconds.", valueName: "seconds")) var timeout: Int?
  @Flag(help: "Print a timestamp before each event.") var timestamp = false

  func run() async throws {
    let client = APIClient(socketPath: try Connection.socketPath())
    let filter = domain
    let once = !loop
    let stamped = timestamp
    let watcher = Task {
      do {
        try client.stream("/v1/events") { line in
          guard let event = try? JSONDecoder().decode(DomainEvent.self, from: Data(line)) else { return true }
          if let filter, filter != event.name && filter != event.uuid { return true }
          var text = "event 'lifecycle' for domain '\(event.name)': \(event.event) \(event.detail)"
          if stamped {
            let date = Date(timeIntervalSince1970: event.timestamp)
            text = date.formatted(.iso8601.year().month().day().time(includingFractionalSeconds: true)) + ": " + text
          }
          writeOutput(Array((text + "\n").utf8))
          return !once
        }
      } catch {
        writeError(Array("error: \(error)\n".utf8))
        Glibc.exit(1)
      }
    }
    if let timeout {
      let timer = Task {
        try await Task.sleep(for: .seconds(timeout))
        watcher.cancel()
        say("event loop timed out")
        Glibc.exit(0)
      }
      _ = await watcher.result
      timer.cancel()
    } else {
      _ = await watcher.result
    }
  }
}
