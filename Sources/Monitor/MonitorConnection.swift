import Glibc
import JSON
import VMM

/// A QMP client connection, for `skvm monitor` and for Swift programs that drive a
/// machine through its monitor: connects, negotiates capabilities, executes commands
/// one at a time, and hands asynchronous events to a callback.
///
/// ```swift
/// let connection = try MonitorConnection(address: try MonitorAddress(parsing: "unix:/tmp/vm.qmp"))
/// let status = try connection.execute("query-status")
/// ```
public final class MonitorConnection: @unchecked Sendable {
  private let fd: Int32
  private let replies = ConditionLock()
  /// Guarded by `replies`.
  private var pending: [JSONValue] = []
  private var closed = false
  private let onEvent: @Sendable (String, JSONValue) -> Void
  /// The server's greeting (`{"QMP": {...}}`).
  public private(set) var greeting: JSONValue = [:]

  /// Connects and negotiates; `onEvent` gets each event's name and whole message, on a reader thread.
  public init(
    address: MonitorAddress, onEvent: @escaping @Sendable (String, JSONValue) -> Void = { _, _ in }
  ) throws(MonitorError) {
    self.onEvent = onEvent
    fd = try Self.connect(address)
    do {
      _ = try OSThread(name: "qmp-reader") { [self] in readLoop() }
    } catch {
      Glibc.close(fd)
      throw MonitorError(description: error.description)
    }
    greeting = try nextReply()
    _ = try execute("qmp_capabilities")
  }

  deinit {
    shutdown(fd, Int32(SHUT_RDWR))
    Glibc.close(fd)
  }

  /// Runs a command; returns its `return` value, or throws the server's error.
  @discardableResult
  public func execute(_ command: String, arguments: [String: JSONValue] = [:]) throws(MonitorError) -> JSONValue {
    var request: [String: JSONValue] = ["execute": .string(command)]
    if !arguments.isEmpty { request["arguments"] = .object(arguments) }
    let data = JSONValue.object(request).compactText + [0x0A]
    let sent = data.withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
    guard sent == data.count else { throw MonitorError(description: "the monitor connection is closed") }
    let reply = try nextReply()
    if let error = reply["error"] {
      throw MonitorError(
        description: "\(error["class"]?.string ?? "Error"): \(error["desc"]?.string ?? "")")
    }
    return reply["return"] ?? [:]
  }

  /// Waits until the server has closed the connection, every event it sent before having been
  /// handed to `onEvent`; false if that has not happened within `seconds`.
  public func waitUntilClosed(seconds: Double) -> Bool {
    replies.withLock { replies.wait(seconds: seconds) { closed } }
  }

  /// Runs a human-monitor (HMP) command line; returns its text output.
  public func human(_ line: String) throws(MonitorError) -> String {
    try execute("human-monitor-command", arguments: ["command-line": .string(line)]).string ?? ""
  }

  private func nextReply() throws(MonitorError) -> JSONValue {
    let reply: JSONValue? = replies.withLock {
      replies.wait { !pending.isEmpty || closed }
      return pending.isEmpty ? nil : pending.removeFirst()
    }
    guard let reply else { throw MonitorError(description: "the monitor closed the connection") }
    return reply
  }

  private func readLoop() {
    var splitter = JSONStreamSplitter(maximumValueSize: 64 << 20)
    var buffer = [UInt8](repeating: 0, count: 65536)
    defer {
      replies.withLock {
        closed = true
        replies.broadcast()
      }
    }
    while true {
      let count = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
      if count < 0, errno == EINTR { continue }
      guard count > 0 else { return }
      for piece in splitter.feed(buffer[0..<count]) {
        guard case .value(let bytes) = piece, let message = try? JSONValue.parse(bytes), message.object != nil
        else { return }
        if let event = message["event"]?.string {
          onEvent(event, message)
        } else {
          replies.withLock {
            pending.append(message)
            replies.broadcast()
          }
        }
      }
    }
  }

  private static func connect(_ address: MonitorAddress) throws(MonitorError) -> Int32 {
    switch address.endpoint {
    case .unix(let path):
      let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
      var socketAddress = MonitorListener.unixAddress(path)
      let result = withUnsafePointer(to: &socketAddress) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
          Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
        }
      }
      guard fd >= 0, result == 0 else {
        let message = String(cString: strerror(errno))
        if fd >= 0 { Glibc.close(fd) }
        throw MonitorError(description: "cannot connect to the monitor at \(path): \(message)")
      }
      return fd
    case .tcp(let host, let port):
      var hints = addrinfo()
      hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
      var list: UnsafeMutablePointer<addrinfo>?
      let status = getaddrinfo(host, String(port), &hints, &list)
      guard status == 0, let first = list else {
        throw MonitorError(description: "monitor address \(host):\(port): \(String(cString: gai_strerror(status)))")
      }
      defer { freeaddrinfo(list) }
      let fd = socket(first.pointee.ai_family, first.pointee.ai_socktype, 0)
      guard fd >= 0, Glibc.connect(fd, first.pointee.ai_addr, first.pointee.ai_addrlen) == 0 else {
        let message = String(cString: strerror(errno))
        if fd >= 0 { Glibc.close(fd) }
        throw MonitorError(description: "cannot connect to the monitor at \(host):\(port): \(message)")
      }
      return fd
    }
  }
}
