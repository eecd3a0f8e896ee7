import Devices
import Glibc
import Synchronization

/// The guest's console on a unix socket (`skvm run --console-socket PATH`), for a management
/// daemon's `console` verb: output goes to `output` (the log) and, while a client is attached,
/// to it as well — never waiting for it: a client that does not read loses output (the log
/// keeps it), the guest does not stall. What the client sends is console input. One client at
/// a time; another is told the console is busy and closed.
public final class ConsoleSocket: ConsoleOutput, @unchecked Sendable {
  private let path: String
  private let listener: Int32
  private let output: any ConsoleOutput
  /// The attached client's socket, or -1.
  private let client = Mutex<Int32>(-1)
  /// Kept in a struct behind the lock (a bare closure there gains a thunk per read: see
  /// Virtio's `QueueInterruptLine`).
  private struct Delivery: Sendable { let deliver: @Sendable (ArraySlice<UInt8>) -> Int }
  private let delivery = Mutex<Delivery?>(nil)

  /// Creates the socket at `path` (mode 0600, replacing a stale one); output also goes to `output`.
  public init(path: String, output: any ConsoleOutput) throws(VirtualMachineError) {
    self.path = path
    self.output = output
    var address = sockaddr_un()
    address.sun_family = sa_family_t(AF_UNIX)
    let bytes = Array(path.utf8)
    guard bytes.count < MemoryLayout.size(ofValue: address.sun_path) else {
      throw .consoleSocket(path: path, reason: "longer than a unix socket path may be (107 bytes)")
    }
    withUnsafeMutableBytes(of: &address.sun_path) { raw in
      for (index, byte) in bytes.enumerated() { raw[index] = byte }
    }
    let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
    guard fd >= 0 else { throw .consoleSocket(path: path, reason: String(cString: strerror(errno))) }
    unlink(path)
    let previous = umask(0o177)
    let bound = withUnsafePointer(to: &address) {
      $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
    }
    umask(previous)
    guard bound == 0, listen(fd, 4) == 0 else {
      let reason = String(cString: strerror(errno))
      Glibc.close(fd)
      throw .consoleSocket(path: path, reason: reason)
    }
    listener = fd
  }

  /// Starts taking clients; their input goes to `deliver` (which returns how many bytes it took).
  public func start(deliver: @escaping @Sendable (ArraySlice<UInt8>) -> Int) {
    delivery.withLock { $0 = Delivery(deliver: deliver) }
    _ = try? OSThread(name: "console-accept") { [self] in acceptLoop() }
  }

  public func write(_ bytes: UnsafeRawBufferPointer) {
    output.write(bytes)
    client.withLock { fd in
      guard fd >= 0, let base = bytes.baseAddress else { return }
      _ = send(fd, base, bytes.count, Int32(MSG_DONTWAIT | MSG_NOSIGNAL))
    }
  }

  private func acceptLoop() {
    while true {
      let fd = accept(listener, nil, nil)
      if fd < 0 {
        if errno == EINTR || errno == ECONNABORTED { continue }
        return
      }
      _ = fcntl(fd, F_SETFD, FD_CLOEXEC)
      let taken = client.withLock { current -> Bool in
        if current >= 0 { return false }
        current = fd
        return true
      }
      if !taken {
        let message = Array("skvm: the console is in use by another client\r\n".utf8)
        _ = message.withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
        Glibc.close(fd)
        continue
      }
      _ = try? OSThread(name: "console-client") { [self] in serve(fd) }
    }
  }

  private func serve(_ fd: Int32) {
    defer {
      client.withLock { $0 = -1 }
      Glibc.close(fd)
    }
    var buffer = [UInt8](repeating: 0, count: 256)
    while true {
      let count = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
      if count < 0, errno == EINTR { continue }
      if count <= 0 { return }
      guard let deliver = delivery.withLock({ $0 })?.deliver else { continue }
      var remaining = buffer[0..<count]
      while !remaining.isEmpty {
        let accepted = deliver(remaining)
        remaining = remaining.dropFirst(accepted)
        if !remaining.isEmpty { usleep(1000) }
      }
    }
  }

  /// Removes the socket file.
  public func close() {
    unlink(path)
  }
}
