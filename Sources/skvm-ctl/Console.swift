import ArgumentParser
import Dispatch
import FoundationEssentials
import Glibc
import ManagementClient
import ManagementModel

/// `console NAME`: the domain's serial console on this terminal until Ctrl-] (the guest's
/// output meanwhile is in its log either way).
struct Console: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "console", abstract: "Attach this terminal to a running domain's serial console; Ctrl-] detaches.")
  @Argument(help: "The domain's name, UUID or id.") var domain: String

  func run() async throws { try await Self.attach(domain) }

  /// Ctrl-]: detaches, as in virsh.
  static let escape: UInt8 = 0x1D

  static func attach(_ domain: String) async throws {
    let facts = try await info(domain)
    guard facts.summary.state.isActive, let path = facts.console else {
      throw CLIError("domain '\(facts.summary.name)' is not running")
    }
    let fd = try connect(path)
    writeOutput(Array("Connected to domain '\(facts.summary.name)'\nEscape character is ^] (Ctrl + ])\n".utf8))
    let terminal = RawTerminal()
    DispatchQueue.global().async {
      var buffer = [UInt8](repeating: 0, count: 4096)
      while true {
        let count = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
        if count < 0 && errno == EINTR { continue }
        if count <= 0 { break }
        _ = buffer.withUnsafeBytes { write(STDOUT_FILENO, $0.baseAddress, count) }
      }
      terminal.restore()
      Glibc.exit(0)
    }
    var buffer = [UInt8](repeating: 0, count: 1024)
    while true {
      let count = buffer.withUnsafeMutableBytes { read(STDIN_FILENO, $0.baseAddress, $0.count) }
      if count < 0 && errno == EINTR { continue }
      if count <= 0 {
        // End of input (a pipe): the guest's answers still come until the console closes.
        shutdown(fd, Int32(SHUT_WR))
        while true { sleep(60) }
      }
      let chunk = buffer[0..<count]
      let escapeAt = chunk.firstIndex(of: escape)
      let forward = escapeAt.map { chunk[..<$0] } ?? chunk
      if !forward.isEmpty {
        _ = Array(forward).withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
      }
      if escapeAt != nil {
        terminal.restore()
        writeOutput(Array("\n".utf8))
        Glibc.exit(0)
      }
    }
  }

  static func connect(_ path: String) throws -> Int32 {
    let fd = UnixSocket.connect(path)
    guard fd >= 0 else { throw CLIError("cannot attach to the console at \(path): \(String(cString: strerror(-fd)))") }
    return fd
  }
}

/// The terminal in raw mode (keys go to the guest as typed) while attached, as it was after.
final class RawTerminal: @unchecked Sendable {
  private var saved = termios()
  private let active: Bool

  init() {
    guard isatty(STDIN_FILENO) == 1, tcgetattr(STDIN_FILENO, &saved) == 0 else {
      active = false
      return
    }
    var raw = saved
    cfmakeraw(&raw)
    active = tcsetattr(STDIN_FILENO, TCSANOW, &raw) == 0
  }

  func restore() {
    if active { tcsetattr(STDIN_FILENO, TCSANOW, &saved) }
  }
}
