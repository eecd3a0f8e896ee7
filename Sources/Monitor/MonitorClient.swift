import CSystemCalls
import Glibc
import VMM

/// One connected QMP client: a reader thread takes its requests and answers each. Replies and
/// events go out at once when the socket takes them without waiting; otherwise a writer thread
/// sends them from a bounded queue, so nothing ever waits for a client that does not read. A
/// client that falls too far behind, or that has not negotiated capabilities within
/// `handshakeSeconds`, is disconnected.
final class MonitorClient: @unchecked Sendable {
  /// How long one write may wait for a client that does not read, before it is cut off.
  static let sendTimeoutSeconds = 5
  /// Bytes of replies and events queued for a client at most; past that it is cut off.
  static let maximumQueuedBytes = 4 << 20

  /// Who is on the other end (for per-peer limits).
  let peer: MonitorPeer
  /// When the client connected (CLOCK_MONOTONIC seconds).
  let connectedAt: Double
  private let fd: Int32
  private let session: QMPSession
  private let lock = ConditionLock()
  /// Guarded by `lock`.
  private var queue: [Outgoing] = []
  private var queuedBytes = 0
  private var connected = true
  private var eventsEnabled = false
  private var negotiatedFlag = false
  /// True while the writer sends a message it took off the queue.
  private var sending = false
  /// Events raised while this client's own request runs (nil when none runs): they go out
  /// with its reply, ahead of it, in one write. A client waiting for the reply of `stop` then
  /// wakes once, not once for the STOP event and again for the reply; on a virtual host each
  /// wake-up of a sleeping client cost more than the rest of the command.
  private var heldEvents: [UInt8]?

  private enum Outgoing {
    case message([UInt8])
    /// Runs once everything queued before it is on the wire (e.g. `quit`).
    case action(@Sendable () -> Void)
  }

  init(fd: Int32, session: QMPSession, peer: MonitorPeer) {
    self.fd = fd
    self.session = session
    self.peer = peer
    connectedAt = monotonicSeconds()
    var timeout = timeval(tv_sec: Self.sendTimeoutSeconds, tv_usec: 0)
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
  }

  /// True once the client has sent `qmp_capabilities`.
  var hasNegotiated: Bool { lock.withLock { negotiatedFlag } }

  /// Serves the client until it disconnects, misbehaves beyond repair or times out before
  /// negotiating; then closes the socket. Runs on the client's reader thread.
  func serve(maximumRequestSize: Int, handshakeSeconds: Double) {
    let writer = try? OSThread(name: "qmp-writer") { [self] in writeLoop() }
    defer {
      finish()
      writer?.join()
      close(fd)
    }
    guard writer != nil else { return }
    enqueue(.message(QMPSession.greeting))
    var splitter = JSONStreamSplitter(maximumValueSize: maximumRequestSize)
    var buffer = [UInt8](repeating: 0, count: 65536)
    while isConnected {
      if !hasNegotiated {
        let remaining = connectedAt + handshakeSeconds - monotonicSeconds()
        var descriptor = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
        let ready = remaining > 0 ? poll(&descriptor, 1, Int32(min(remaining * 1000, 60_000)) + 1) : 0
        if ready < 0 && errno == EINTR { continue }
        if ready == 0 {
          let error = QMPError(
            .genericError, "no qmp_capabilities within \(Int(handshakeSeconds)) seconds; disconnecting")
          enqueue(.message(QMPMessage.encode(["error": error.json])))
          return
        }
      }
      let count = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
      if count < 0, errno == EINTR { continue }
      guard count > 0 else { return }
      for piece in splitter.feed(buffer[0..<count]) {
        switch piece {
        case .value(let bytes):
          lock.withLock { heldEvents = [] }
          let reply = session.handle(bytes)
          let events = lock.withLock { () -> [UInt8] in
            defer { heldEvents = nil }
            return heldEvents ?? []
          }
          guard enqueue(.message(events.isEmpty ? reply.data : events + reply.data)) else { return }
          if session.negotiated { enableEvents() }
          if let after = reply.afterReply { enqueue(.action(after)) }
        case .tooLarge:
          let error = QMPError(
            .genericError,
            "JSON value too large or too deeply nested (limit \(maximumRequestSize) bytes); disconnecting")
          enqueue(.message(QMPMessage.encode(["error": error.json])))
          return
        }
      }
    }
  }

  /// Queues an event if the client has negotiated capabilities (or holds it for the reply
  /// of the client's request that is running); never waits.
  func sendEvent(_ message: [UInt8]) {
    let sendNow = lock.withLock { () -> Bool in
      guard eventsEnabled && connected else { return false }
      guard heldEvents == nil else {
        heldEvents?.append(contentsOf: message)
        return false
      }
      return true
    }
    if sendNow { enqueue(.message(message)) }
  }

  /// Sends `item` now if nothing is ahead of it and the socket takes it whole without waiting
  /// (the usual case: no hand-off to the writer thread, whose wake-up cost more than the rest
  /// of a `query-status`); otherwise adds it, or what is left of it, to the queue. False (and
  /// the client is cut off) if the queue is over its bound.
  @discardableResult
  private func enqueue(_ item: Outgoing) -> Bool {
    let accepted = lock.withLock { () -> Bool in
      guard connected else { return false }
      if case .message(let data) = item {
        var rest = data
        if queue.isEmpty && !sending {
          let sent = sendWithoutWaiting(data)
          if sent == data.count { return true }
          if sent > 0 { rest = Array(data[sent...]) }
        }
        guard queuedBytes + rest.count <= Self.maximumQueuedBytes else { return false }
        queuedBytes += rest.count
        queue.append(.message(rest))
      } else {
        queue.append(item)
      }
      lock.signal()
      return true
    }
    if !accepted { disconnect() }
    return accepted
  }

  /// Bytes of `data` the socket took at once (fewer if it would have to wait, or on an error,
  /// which the writer thread then meets and handles).
  private func sendWithoutWaiting(_ data: [UInt8]) -> Int { send(data, flags: Int32(MSG_DONTWAIT)) }

  /// The writer thread: sends queued items in order until the client is gone.
  private func writeLoop() {
    while true {
      let next = lock.withLock { () -> Outgoing? in
        lock.wait { !queue.isEmpty || !connected }
        guard !queue.isEmpty else { return nil }
        let item = queue.removeFirst()
        if case .message(let data) = item { queuedBytes -= data.count }
        sending = true
        return item
      }
      defer {
        lock.withLock {
          sending = false
          lock.broadcast()
        }
      }
      switch next {
      case nil:
        shutdown(fd, Int32(SHUT_RDWR))
        return
      case .action(let action)?:
        action()
      case .message(let data)?:
        if !write(data) {
          disconnect()
          return
        }
      }
    }
  }

  /// Writes `data` whole (blocking up to the send timeout); false if the client is gone or stuck.
  private func write(_ data: [UInt8]) -> Bool { send(data, flags: 0) == data.count }

  /// Sends `data` until it is all sent or a send fails; returns the bytes sent. MSG_NOSIGNAL:
  /// a client that went away is an error here, not a SIGPIPE for the VMM.
  private func send(_ data: [UInt8], flags: Int32) -> Int {
    data.withUnsafeBytes { bytes -> Int in
      guard let base = bytes.baseAddress else { return 0 }
      var sent = 0
      while sent < bytes.count {
        let count = Glibc.send(fd, base + sent, bytes.count - sent, Int32(MSG_NOSIGNAL) | flags)
        if count < 0, errno == EINTR { continue }
        if count <= 0 { break }
        sent += count
      }
      return sent
    }
  }

  /// Cuts the connection now, dropping what is queued (a thread blocked reading it wakes up).
  func disconnect() {
    lock.withLock {
      connected = false
      queue.removeAll()
      queuedBytes = 0
      lock.broadcast()
    }
    shutdown(fd, Int32(SHUT_RDWR))
  }

  /// Sends what is queued — the last events, such as SHUTDOWN — within `seconds`, then cuts the
  /// connection: a VMM that exits tells its clients why first, as QEMU does.
  func disconnectAfterSending(within seconds: Double) {
    lock.withLock {
      _ = lock.wait(seconds: seconds) { (queue.isEmpty && !sending) || !connected }
    }
    disconnect()
  }

  /// Stops taking requests; what is queued is still sent (within the send timeout), then the
  /// writer closes the connection.
  private func finish() {
    lock.withLock {
      connected = false
      lock.broadcast()
    }
  }

  private var isConnected: Bool { lock.withLock { connected } }

  private func enableEvents() {
    lock.withLock {
      eventsEnabled = true
      negotiatedFlag = true
    }
  }
}

/// The other end of a monitor connection, for per-peer limits: a user id on a Unix socket,
/// an address over TCP.
enum MonitorPeer: Hashable, Sendable {
  case user(uid_t)
  case address(String)
  case unknown

  /// The peer of the connected socket `fd`.
  init(socket fd: Int32) {
    var storage = sockaddr_storage()
    var length = socklen_t(MemoryLayout<sockaddr_storage>.size)
    let family = withUnsafeMutablePointer(to: &storage) {
      $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
        getpeername(fd, $0, &length) == 0 ? Int32($0.pointee.sa_family) : -1
      }
    }
    switch family {
    case AF_UNIX:
      var uid: UInt32 = 0
      self = csys_peer_uid(fd, &uid) == 0 ? .user(uid) : .unknown
    case AF_INET, AF_INET6:
      var host = [CChar](repeating: 0, count: Int(NI_MAXHOST))
      let status = withUnsafePointer(to: &storage) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
          getnameinfo($0, length, &host, socklen_t(host.count), nil, 0, NI_NUMERICHOST)
        }
      }
      let bytes = host.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }
      self = status == 0 ? .address(String(decoding: bytes, as: UTF8.self)) : .unknown
    default:
      self = .unknown
    }
  }
}

/// CLOCK_MONOTONIC in seconds.
func monotonicSeconds() -> Double {
  var time = timespec()
  clock_gettime(CLOCK_MONOTONIC, &time)
  return Double(time.tv_sec) + Double(time.tv_nsec) / 1e9
}
