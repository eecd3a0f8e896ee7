import ArgumentParser
import FoundationEssentials
import Glibc
import ManagementModel

/// `skvm ctl`: virsh's verbs against the management daemon (skvmd).
@main
struct CTL: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "skvm ctl",
    abstract: "Manage the domains of the SwiftKVM daemon (skvmd) with virsh's verbs.",
    discussion: """
      Before the verb, -c system|session (or qemu:///system, qemu:///session, or a socket path) \
      picks the daemon, as virsh's -c; -r uses its read-only socket. Without -c: $SKVM_CONNECT, \
      else the system daemon for root and your own session daemon otherwise. \
      Errors are printed as 'error: …' with exit status 1, as virsh does.
      """,
    version: "skvm ctl \(ManagementVersion.current)",
    subcommands: [
      Define.self, Undefine.self, Create.self, Start.self, Shutdown.self, Destroy.self, Reboot.self, Reset.self,
      Suspend.self, Resume.self, List.self, DomInfo.self, DomState.self, DomUUID.self, DomName.self, DomID.self,
      DumpXML.self, Autostart.self, Template.self, Clone.self, DomBlkList.self, DomIfList.self, MonitorCommand.self,
      VCPUPinVerb.self, Console.self, Event.self, Migrate.self, Version.self,
    ])

  static func main() async {
    let arguments = Connection.extract(Array(CommandLine.arguments.dropFirst()))
    do {
      var command = try parseAsRoot(arguments)
      if var asyncCommand = command as? any AsyncParsableCommand {
        try await asyncCommand.run()
      } else {
        try command.run()
      }
    } catch let error as CLIError {
      writeError(Array("error: \(error.description)\n".utf8))
      Glibc.exit(1)
    } catch {
      exit(withError: error)
    }
  }
}

/// Writes a line to standard output, at once (a pipe's reader sees it before what follows).
func say(_ line: String) { writeOutput(Array((line + "\n").utf8)) }

/// Writes bytes to standard output, whole.
func writeOutput(_ bytes: [UInt8]) { writeAll(STDOUT_FILENO, bytes) }

/// Writes bytes to standard error, whole.
func writeError(_ bytes: [UInt8]) { writeAll(STDERR_FILENO, bytes) }

private func writeAll(_ fd: Int32, _ bytes: [UInt8]) {
  var offset = 0
  while offset < bytes.count {
    let count = bytes[offset...].withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
    if count < 0 && errno == EINTR { continue }
    if count <= 0 { return }
    offset += count
  }
}
