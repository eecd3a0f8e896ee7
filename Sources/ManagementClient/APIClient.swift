import Glibc
import NIOCore
import NIOEmbedded
import NIOHTTP1

/// Why a request to the daemon failed before it answered.
public struct APIClientError: Error, CustomStringConvertible {
  public let description: String
}

/// A client of the daemon's API over its unix socket (`skvm ctl`, tests): a blocking socket,
/// with SwiftNIO's HTTP/1.1 codec run in an embedded channel — no event loop threads to start,
/// so a one-shot command stays quick.
public struct APIClient: Sendable {
  public let socketPath: String

  public init(socketPath: String) { self.socketPath = socketPath }

  /// One answer: status and body.
  public struct Reply: Sendable {
    public var status: Int
    public var body: [UInt8]
    public var text: String { String(decoding: body, as: UTF8.self) }
  }

  private func connect() throws(APIClientError) -> Int32 {
    let fd = UnixSocket.connect(socketPath)
    if fd >= 0 { return fd }
    let code = -fd
    switch code {
    case ENOENT, ECONNREFUSED:
      throw APIClientError(
        description: "cannot connect to skvmd at \(socketPath): the daemon is not running. Start it with "
          + "'skvmd' (as root: 'systemctl start skvmd'; for your own domains: 'skvmd --session')")
    case EACCES, EPERM:
      throw APIClientError(
        description: "cannot connect to skvmd at \(socketPath): permission denied (the socket is the daemon "
          + "owner's; use 'sudo', or '-c session' for your own daemon)")
    default:
      throw APIClientError(description: "cannot connect to skvmd at \(socketPath): \(String(cString: strerror(code)))")
    }
  }

  /// Sends a request and hands each decoded response part to `part` until it returns false or
  /// the daemon closes the connection.
  private func exchange(
    _ method: HTTPMethod, _ target: String, body: [UInt8], contentType: String,
    part: (HTTPClientResponsePart) -> Bool
  ) throws(APIClientError) {
    let fd = try connect()
    defer { close(fd) }
    do {
      let channel = EmbeddedChannel()
      try channel.pipeline.syncOperations.addHTTPClientHandlers()
      var headers = HTTPHeaders()
      headers.add(name: "Host", value: "localhost")
      headers.add(name: "Content-Type", value: contentType)
      headers.add(name: "Content-Length", value: String(body.count))
      headers.add(name: "Connection", value: "close")
      try channel.writeOutbound(
        HTTPClientRequestPart.head(HTTPRequestHead(version: .http1_1, method: method, uri: target, headers: headers)))
      if !body.isEmpty { try channel.writeOutbound(HTTPClientRequestPart.body(.byteBuffer(ByteBuffer(bytes: body)))) }
      try channel.writeOutbound(HTTPClientRequestPart.end(nil))
      while let buffer = try channel.readOutbound(as: ByteBuffer.self) {
        let bytes = Array(buffer.readableBytesView)
        var sent = 0
        while sent < bytes.count {
          let count = bytes[sent...].withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
          if count < 0 && errno == EINTR { continue }
          guard count > 0 else { throw APIClientError(description: "skvmd closed the connection") }
          sent += count
        }
      }
      var chunk = [UInt8](repeating: 0, count: 65536)
      while true {
        let count = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
        if count < 0 && errno == EINTR { continue }
        if count <= 0 {
          _ = try? channel.finish()
          return
        }
        try channel.writeInbound(ByteBuffer(bytes: chunk[0..<count]))
        while let decoded = try channel.readInbound(as: HTTPClientResponsePart.self) {
          if !part(decoded) { return }
        }
      }
    } catch let error as APIClientError {
      throw error
    } catch {
      throw APIClientError(description: "the answer from skvmd was not HTTP: \(error)")
    }
  }

  /// Sends one request and reads the whole answer.
  public func request(
    _ method: HTTPMethod, _ target: String, body: [UInt8] = [], contentType: String = "application/json"
  ) throws(APIClientError) -> Reply {
    var reply = Reply(status: 0, body: [])
    var complete = false
    try exchange(method, target, body: body, contentType: contentType) { part in
      switch part {
      case .head(let head): reply.status = Int(head.status.code)
      case .body(let buffer): reply.body += buffer.readableBytesView
      case .end: complete = true
      }
      return !complete
    }
    guard complete else { throw APIClientError(description: "skvmd closed the connection before it answered") }
    return reply
  }

  /// Sends a GET and hands each line of the (streamed) answer to `line` until it returns false
  /// or the daemon ends the stream.
  public func stream(_ target: String, line: ([UInt8]) -> Bool) throws(APIClientError) {
    var pending: [UInt8] = []
    try exchange(.GET, target, body: [], contentType: "application/json") { part in
      guard case .body(let buffer) = part else {
        if case .end = part { return false }
        return true
      }
      pending += buffer.readableBytesView
      while let newline = pending.firstIndex(of: 0x0A) {
        let text = Array(pending[..<newline])
        pending.removeSubrange(...newline)
        if !line(text) { return false }
      }
      return true
    }
  }
}

/// Connecting to a unix stream socket (the daemon's, a domain's console).
public enum UnixSocket {
  /// A connected socket (close-on-exec) to `path`, or minus the errno value.
  public static func connect(_ path: String) -> Int32 {
    var address = sockaddr_un()
    address.sun_family = sa_family_t(AF_UNIX)
    let bytes = Array(path.utf8)
    guard bytes.count < MemoryLayout.size(ofValue: address.sun_path) else { return -ENAMETOOLONG }
    withUnsafeMutableBytes(of: &address.sun_path) { raw in
      for (index, byte) in bytes.enumerated() { raw[index] = byte }
    }
    let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
    guard fd >= 0 else { return -errno }
    let connected = withUnsafePointer(to: &address) {
      $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
        Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
      }
    }
    if connected == 0 { return fd }
    let code = errno
    close(fd)
    return -code
  }
}
