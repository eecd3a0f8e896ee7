import ArgumentParser
import Glibc

/// `skvm ctl VERB …`: the management CLI (virsh's verbs against skvmd). It is its own program,
/// `skvm-ctl` beside `skvm`, so that `skvm run` carries none of the HTTP client's weight.
struct Ctl: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "ctl",
    abstract: "Manage the daemon's domains with virsh's verbs (skvm ctl --help lists them).")

  @Argument(parsing: .captureForPassthrough, help: "The verb and its arguments.")
  var arguments: [String] = []

  func run() throws { Self.exec(arguments) }

  /// Replaces this process with `skvm-ctl ARGUMENTS` (from beside this executable, else PATH).
  static func exec(_ arguments: [String]) -> Never {
    var path = [UInt8](repeating: 0, count: 4096)
    let length = readlink("/proc/self/exe", &path, path.count - 1)
    var candidates: [String] = []
    if length > 0 {
      let own = String(decoding: path[0..<length], as: UTF8.self)
      if let slash = own.lastIndex(of: "/") { candidates.append(String(own[...slash]) + "skvm-ctl") }
    }
    candidates.append("skvm-ctl")
    for candidate in candidates {
      let argv = ([candidate] + arguments).map { strdup($0) } + [nil]
      if candidate.contains("/") {
        execv(candidate, argv)
      } else {
        execvp(candidate, argv)
      }
    }
    printError(
      "skvm ctl: skvm-ctl is not installed beside skvm or on PATH; build it with 'swift build -c release --product skvm-ctl'"
    )
    Glibc.exit(1)
  }
}
