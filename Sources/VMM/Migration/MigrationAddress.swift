import Glibc
import Network

/// Where a live migration goes or is received: `tcp:[HOST]:PORT`, the host an IPv4 address (or
/// `localhost`), loopback when left out. One parser for `--incoming` and QMP `migrate`; a
/// listening side may give port 0 (any free port, reported once it listens).
public struct MigrationAddress: Sendable, Equatable, CustomStringConvertible {
  public let host: String
  public private(set) var port: Int
  let ip: in_addr

  public static func == (a: MigrationAddress, b: MigrationAddress) -> Bool { a.host == b.host && a.port == b.port }

  /// Why a `tcp:` address was not one.
  public struct ParseError: Error, CustomStringConvertible {
    public let description: String
  }

  /// Parses `tcp:[HOST]:PORT`; the error says which part is wrong. With `listening`, port 0
  /// (let the kernel pick a free one) is allowed.
  public init(parsing text: String, listening: Bool = false) throws(ParseError) {
    let rest = text.dropFirst(text.hasPrefix("tcp:") ? 4 : 0)
    guard text.hasPrefix("tcp:"), let colon = rest.lastIndex(of: ":"),
      let port = Int(rest[rest.index(after: colon)...])
    else {
      throw ParseError(description: "'\(text)': expected tcp:[HOST]:PORT, e.g. tcp::4444 or tcp:0.0.0.0:4444")
    }
    guard ((listening ? 0 : 1)...65535).contains(port) else {
      throw ParseError(
        description: "'\(text)': port \(port) is not a TCP port (\(listening ? "0 for any free one, " : "")1–65535)")
    }
    let host = String(rest[..<colon])
    let name = host.isEmpty || host == "localhost" ? "127.0.0.1" : host
    guard let ip = UserNetwork.parseIPv4(name) else {
      throw ParseError(description: "'\(text)': expected tcp:[IPv4 ADDRESS]:PORT (1–65535); '\(host)' is not one")
    }
    self.host = name
    self.port = port
    self.ip = ip
  }

  public var description: String { "\(host):\(port)" }

  /// The same host with another port (where a listener on port 0 ended up).
  func with(port: Int) -> MigrationAddress {
    var copy = self
    copy.port = port
    return copy
  }

  /// Calls `body` with the address as a socket address and its length (for bind, connect).
  func withSocketAddress<T>(_ body: (UnsafePointer<sockaddr>, socklen_t) -> T) -> T {
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_port = UInt16(port).bigEndian
    address.sin_addr = ip
    return withUnsafePointer(to: &address) {
      $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { body($0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
    }
  }
}
