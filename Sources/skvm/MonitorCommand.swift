import ArgumentParser
import Glibc
import JSON
import Monitor

/// `skvm monitor`: a small interactive human-monitor client for a running `skvm run --qmp`.
struct MonitorCommand: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "monitor",
    abstract: "Talk to a running machine's QMP monitor, HMP-style (info kvm, stop, cont, quit, ...).",
    discussion: """
      Each line typed is run as a human-monitor command (try 'help'); events (STOP, RESUME,
      RESET, POWERDOWN, SHUTDOWN) are printed as they arrive. With -c, runs the given
      commands and exits. End with Ctrl-D, or 'quit' (which also stops the machine).
      """)

  @Argument(help: ArgumentHelp("The monitor: a socket path, unix:PATH or tcp:HOST:PORT.", valueName: "address"))
  var address: String

  @Option(name: .short, help: ArgumentHelp("Run this command and exit (repeatable).", valueName: "command"))
  var command: [String] = []

  func run() throws {
    let text = address.hasPrefix("unix:") || address.hasPrefix("tcp:") ? address : "unix:" + address
    let connection: MonitorConnection
    do {
      let parsed = try MonitorAddress(parsing: text)
      connection = try MonitorConnection(address: parsed) { name, message in
        var line = "event \(name)"
        if let data = message["data"] {
          line += " " + String(decoding: data.compactText, as: UTF8.self)
        }
        writeOut(line + "\n")
      }
    } catch {
      printError("skvm monitor: \(error)")
      throw ExitCode(1)
    }
    let interactive = command.isEmpty && isatty(STDIN_FILENO) == 1
    if interactive, let version = connection.greeting["QMP"]?["version"] {
      writeOut("connected to \(version["package"]?.string ?? "a QMP monitor"); 'help' lists commands, Ctrl-D ends\n")
    }
    var lines = command.makeIterator()
    while true {
      if interactive {
        writeOut("(skvm) ")
      }
      guard let line = command.isEmpty ? readLine() : lines.next() else { break }
      let trimmed = String(line.drop { $0 == " " || $0 == "\t" }.reversed().drop { $0 == " " || $0 == "\t" }.reversed())
      if trimmed.isEmpty { continue }
      do {
        let output = try connection.human(trimmed)
        writeOut(output.split(separator: "\r\n", omittingEmptySubsequences: false).joined(separator: "\n"))
      } catch {
        printError("skvm monitor: \(error)")
        throw ExitCode(1)
      }
      if trimmed == "quit" || trimmed == "q" { break }
    }
  }
}

/// Writes `text` to standard output at once (events arrive on another thread).
private func writeOut(_ text: String) {
  var text = text
  text.withUTF8 { bytes in _ = write(STDOUT_FILENO, bytes.baseAddress, bytes.count) }
}
