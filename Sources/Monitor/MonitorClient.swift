import Foundation
import Glibc

/// One connected QMP client: reads requests from its socket, answers each, and takes
/// events once it has negotiated capabilities.
final class MonitorClient: @unchecked Sendable {
  /// How long a reply or event may wait for a client that does not read, before it is dropped.
  static let sendTimeoutSeconds = 5

  private let fd: Int32
  private let session: QMPSession
  private let writeLock = NSLock()
  private let state = NSLock()
  private var connected = true
  private var eventsEnabled = false

  init(fd: Int32, session: QMPSession) {
    self.fd = fd
    self.session = session
    var timeout = timeval(tv_sec: Self.sendTimeoutSeconds, tv_usec: 0)
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
  }

  /// Serves the client until it disconnects or misbehaves beyond repair; closes the socket.
  func serve(maximumRequestSize: Int) {
    defer { finish() }
    guard send(QMPSession.greeting) else { return }
    var splitter = JSONStreamSplitter(maximumValueSize: maximumRequestSize)
    var buffer = [UInt8](repeating: 0, count: 65536)
    while isConnected {
      let count = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
      if count < 0, errno == EINTR { continue }
      guard count > 0 else { return }
      for piece in splitter.feed(buffer[0..<count]) {
        switch piece {
        case .value(let bytes):
          let reply = session.handle(bytes)
          guard send(reply.data) else { return }
          if session.negotiated { enableEvents() }
          reply.afterReply?()
        case .tooLarge:
          let error = QMPError(
            .genericError,
            "JSON value too large or too deeply nested (limit \(maximumRequestSize) bytes); disconnecting")
          _ = send(QMPMessage.encode(["error": error.json]))
          return
        }
      }
    }
  }

  /// Sends an event if the client has negotiated capabilities.
  func sendEvent(_ message: Data) {
    state.lock()
    let wanted = eventsEnabled && connected
    state.unlock()
    if wanted { _ = send(message) }
  }

  /// Writes `data` whole; false (and the client is cut off) if it cannot.
  @discardableResult
  func send(_ data: Data) -> Bool {
    writeLock.lock()
    defer { writeLock.unlock() }
    guard isConnected else { return false }
    var sent = 0
    let ok = data.withUnsafeBytes { bytes -> Bool in
      guard let base = bytes.baseAddress else { return true }
      while sent < bytes.count {
        // MSG_NOSIGNAL: a client that went away is an error here, not a SIGPIPE for the VMM.
        let count = Glibc.send(fd, base + sent, bytes.count - sent, Int32(MSG_NOSIGNAL))
        if count < 0, errno == EINTR { continue }
        if count <= 0 { return false }
        sent += count
      }
      return true
    }
    if !ok { disconnect() }
    return ok
  }

  /// Cuts the connection (a thread blocked reading it wakes up and finishes).
  func disconnect() {
    state.lock()
    defer { state.unlock() }
    guard connected else { return }
    connected = false
    shutdown(fd, Int32(SHUT_RDWR))
  }

  private var isConnected: Bool {
    state.lock()
    defer { state.unlock() }
    return connected
  }

  private func enableEvents() {
    state.lock()
    eventsEnabled = true
    state.unlock()
  }

  private func finish() {
    disconnect()
    writeLock.lock()
    close(fd)
    writeLock.unlock()
  }
}
