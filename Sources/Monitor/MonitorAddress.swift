import VMM

/// Where a monitor listens, parsed from QEMU's `-qmp` syntax:
/// `unix:PATH[,server=on][,wait=off]` or `tcp:[HOST]:PORT[,server=on][,wait=off]`.
///
/// The monitor is always the server. `wait=on` holds the guest until the first client
/// connects, as QEMU does; unlike QEMU the default is `wait=off`. A TCP host left out
/// means loopback (127.0.0.1): a monitor can stop, reset and quit the machine, so it is
/// never exposed beyond this host unless asked for by address.
public struct MonitorAddress: Sendable, Equatable, CustomStringConvertible {
  /// The kind of socket.
  public enum Endpoint: Sendable, Equatable {
    case unix(path: String)
    case tcp(host: String, port: UInt16)
  }

  public var endpoint: Endpoint
  /// Whether the guest waits for the first client before it starts.
  public var waitForClient: Bool

  public init(endpoint: Endpoint, waitForClient: Bool = false) {
    self.endpoint = endpoint
    self.waitForClient = waitForClient
  }

  /// A `--qmp` value could not be parsed.
  public struct ParseError: Error, CustomStringConvertible, Equatable {
    public let description: String
  }

  /// Parses QEMU's syntax (see the type's documentation).
  public init(parsing text: String) throws(ParseError) {
    func fail(_ why: String) -> ParseError {
      ParseError(
        description:
          "'\(text)' is not a monitor address: \(why) (expected unix:PATH[,server=on][,wait=off] or tcp:[HOST]:PORT)")
    }
    let list: OptionList
    do { list = try OptionList(parsing: text) } catch { throw fail(error.description) }
    let main = list.main
    waitForClient = false
    for (key, value) in list.options {
      guard ["on", "off"].contains(value) else { throw fail("option \(key) takes on or off, not '\(value)'") }
      switch key {
      case "server":
        if value == "off" { throw fail("skvm's monitor is always the server; server=off is not supported") }
      case "wait": waitForClient = value == "on"
      case "nowait": waitForClient = false
      default: throw fail("unknown option '\(key)'")
      }
    }
    if main.hasPrefix("unix:") {
      let path = String(main.dropFirst(5))
      guard !path.isEmpty else { throw fail("the socket path is empty") }
      guard path.utf8.count < 108 else { throw fail("the socket path is longer than 107 bytes") }
      endpoint = .unix(path: path)
    } else if main.hasPrefix("tcp:") {
      let rest = main.dropFirst(4)
      guard let colon = rest.lastIndex(of: ":") else { throw fail("no port") }
      var host = String(rest[..<colon])
      if host.hasPrefix("[") && host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
      guard let port = UInt16(rest[rest.index(after: colon)...]), port > 0 else {
        throw fail("the port must be a number from 1 to 65535")
      }
      endpoint = .tcp(host: host.isEmpty ? "127.0.0.1" : host, port: port)
    } else {
      throw fail("unknown kind")
    }
  }

  /// QEMU's way of printing it (for `query-chardev`).
  public var description: String {
    switch endpoint {
    case .unix(let path): "unix:\(path),server=on"
    case .tcp(let host, let port): "tcp:\(host):\(port),server=on"
    }
  }
}
