import Glibc

/// One end of a live-migration TCP connection: whole messages out, exact byte counts in, each
/// with a deadline, and errors that say what was being done. Everything read is untrusted:
/// the reader checks every length against a limit before it allocates. One thread reads and
/// queues (`enqueue`); `send` from another thread is only for a side that queues nothing.
final class MigrationChannel: @unchecked Sendable {
  let fd: Int32
  /// Who is at the other end, for messages.
  let peer: String

  /// Why a migration stream could not go on.
  struct Failure: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
  }

  init(fd: Int32, peer: String, timeoutSeconds: Int = 30) {
    self.fd = fd
    self.peer = peer
    setTimeout(seconds: timeoutSeconds)
    var one: Int32 = 1
    _ = setsockopt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
  }

  deinit {
    close(fd)
    readAhead.deallocate()
    outgoing.deallocate()
  }

  /// Bytes read past what was asked for: a stream of small messages (a header and one dirty
  /// page each) costs one `recv` per 64 KiB, not three or four per message.
  private let readAhead = UnsafeMutableRawBufferPointer.allocate(byteCount: 1 << 16, alignment: 64)
  private var readStart = 0
  private var readEnd = 0
  /// Small messages queued to go out together (`enqueue`); sent before anything else is sent
  /// and before any read, so an answer is never awaited for a message still queued.
  private let outgoing = UnsafeMutableRawBufferPointer.allocate(byteCount: 1 << 18, alignment: 64)
  private var outgoingCount = 0

  /// How long a send or receive (or a connect) may wait before it fails as timed out.
  func setTimeout(seconds: Int) {
    var timeout = timeval(tv_sec: seconds, tv_usec: 0)
    _ = setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
    _ = setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
  }

  /// Ends the connection both ways at once (a cancel wakes a thread blocked on it).
  func shutDown() { _ = shutdown(fd, Int32(SHUT_RDWR)) }

  // MARK: Sending

  /// Sends every byte of the buffers, in order (after what is queued).
  func send(_ parts: [UnsafeRawBufferPointer]) throws(Failure) {
    try flush()
    try sendNow(parts)
  }

  /// Queues a small message (`bytes`, then `data`) to go out with others; one too big to
  /// queue goes at once.
  func enqueue(_ bytes: [UInt8], then data: UnsafeRawBufferPointer) throws(Failure) {
    let length = bytes.count + data.count
    guard length <= outgoing.count / 4 else { return try send(bytes, then: data) }
    if outgoingCount + length > outgoing.count { try flush() }
    bytes.withUnsafeBytes { append($0) }
    append(data)
  }

  /// Copies `part` to the end of the queue (which has room for it).
  private func append(_ part: UnsafeRawBufferPointer) {
    guard let source = part.baseAddress, part.count > 0 else { return }
    (outgoing.baseAddress! + outgoingCount).copyMemory(from: source, byteCount: part.count)
    outgoingCount += part.count
  }

  /// Sends what is queued.
  func flush() throws(Failure) {
    guard outgoingCount > 0 else { return }
    let count = outgoingCount
    outgoingCount = 0
    try sendNow([UnsafeRawBufferPointer(rebasing: outgoing[0..<count])])
  }

  private func sendNow(_ parts: [UnsafeRawBufferPointer]) throws(Failure) {
    for part in parts {
      var done = 0
      while done < part.count {
        let sent = Glibc.send(fd, part.baseAddress! + done, part.count - done, Int32(MSG_NOSIGNAL))
        if sent < 0 && errno == EINTR { continue }
        guard sent > 0 else { throw Failure("the connection to \(peer) failed while sending: \(Self.errorText())") }
        done += sent
      }
    }
  }

  func send(_ bytes: [UInt8], then data: UnsafeRawBufferPointer? = nil) throws(Failure) {
    var failure: Failure?
    bytes.withUnsafeBytes { buffer in
      do throws(Failure) { try send(data.map { [buffer, $0] } ?? [buffer]) } catch { failure = error }
    }
    if let failure { throw failure }
  }

  // MARK: Receiving

  /// Reads exactly `count` bytes into `target`: what was read ahead first, then a large rest
  /// straight into `target`, a small one through the read-ahead buffer.
  func receive(into target: UnsafeMutableRawBufferPointer) throws(Failure) {
    try flush()
    guard let base = target.baseAddress, target.count > 0 else { return }
    var done = min(readEnd - readStart, target.count)
    if done > 0 {
      base.copyMemory(from: readAhead.baseAddress! + readStart, byteCount: done)
      readStart += done
    }
    while done < target.count {
      let wanted = target.count - done
      if wanted >= readAhead.count {
        done += try receiveSome(into: base + done, count: wanted)
      } else {
        let read = try receiveSome(into: readAhead.baseAddress!, count: readAhead.count)
        let used = min(read, wanted)
        (base + done).copyMemory(from: readAhead.baseAddress!, byteCount: used)
        readStart = used
        readEnd = read
        done += used
      }
    }
  }

  /// One `recv` of at most `count` bytes: how many came (at least one).
  private func receiveSome(into target: UnsafeMutableRawPointer, count: Int) throws(Failure) -> Int {
    while true {
      let read = recv(fd, target, count, 0)
      if read < 0 && errno == EINTR { continue }
      if read == 0 { throw Failure("\(peer) closed the connection mid-stream") }
      guard read > 0 else { throw Failure("reading from \(peer) failed: \(Self.errorText())") }
      return read
    }
  }

  /// Reads `count` bytes (at most `limit`, else the stream is refused as malformed).
  func receive(_ count: Int, limit: Int, what: String) throws(Failure) -> [UInt8] {
    guard count >= 0, count <= limit else {
      throw Failure("\(peer) sent \(what) of \(count) bytes (at most \(limit) are accepted): not a valid stream")
    }
    var bytes = [UInt8](repeating: 0, count: count)
    var failure: Failure?
    bytes.withUnsafeMutableBytes { buffer in
      do throws(Failure) { try receive(into: buffer) } catch { failure = error }
    }
    if let failure { throw failure }
    return bytes
  }

  func receiveByte() throws(Failure) -> UInt8 { try receive(1, limit: 1, what: "a message kind")[0] }

  func receive32() throws(Failure) -> UInt32 {
    var value: UInt32 = 0
    try withUnsafeMutableBytes(of: &value) { buffer throws(Failure) in try receive(into: buffer) }
    return UInt32(littleEndian: value)
  }

  func receive64() throws(Failure) -> UInt64 {
    var value: UInt64 = 0
    try withUnsafeMutableBytes(of: &value) { buffer throws(Failure) in try receive(into: buffer) }
    return UInt64(littleEndian: value)
  }

  static func errorText() -> String {
    errno == EAGAIN ? "timed out" : String(cString: strerror(errno))
  }
}

/// Little-endian encoding of a message's fixed fields.
struct MigrationMessage {
  var bytes: [UInt8]
  init(_ kind: MigrationKind) { bytes = [kind.rawValue] }
  mutating func put32(_ value: UInt32) { withUnsafeBytes(of: value.littleEndian) { bytes += $0 } }
  mutating func put64(_ value: UInt64) { withUnsafeBytes(of: value.littleEndian) { bytes += $0 } }
  mutating func putText(_ text: [UInt8]) {
    put32(UInt32(text.count))
    bytes += text
  }
}

/// The messages of a live-migration stream. Source to destination: `hello` (format version,
/// configuration, RAM map), then `pages` and `zeros` for as many passes as it takes, then
/// `drain` (answered `drained` once everything before it is stored: the stop that follows
/// does not wait for a backlog), `state` (vCPUs and devices, as a snapshot file holds them)
/// and `complete` (the source has let go of its disks), or `cancel`. Destination to source:
/// `accepted` or `refused` after the hello (before any RAM is sent), `drained`, `running` or
/// `failed` after `complete`.
enum MigrationKind: UInt8 {
  case hello = 0x48  // H
  case pages = 0x50  // P
  case zeros = 0x5A  // Z
  case state = 0x53  // S
  case complete = 0x43  // C
  case cancel = 0x58  // X
  case accepted = 0x41  // A
  case refused = 0x52  // R
  case running = 0x4F  // O
  case failed = 0x46  // F
  case drain = 0x44  // D
  case drained = 0x59  // Y
  case disksReleased = 0x4C  // L (locks)

  static let magic = Array("SKVMMIGR".utf8)
  /// 2: `complete` carries whether the source ran (the destination then runs, or stays paused).
  /// 3: `drain`/`drained` before the stop.
  /// 4: `disksReleased` after the stop, before the state.
  static let formatVersion: UInt32 = 4
  /// Pages one `pages` or `zeros` message carries at most.
  static let maximumRun = 1024
}
