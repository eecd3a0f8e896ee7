import Glibc

/// A listening socket for a monitor: a Unix socket file or a TCP port.
///
/// Everything that can go wrong is found when it is opened, before the guest starts: a
/// missing directory, a path a live process is serving, a port in use.
final class MonitorListener: @unchecked Sendable {
  let address: MonitorAddress
  let fd: Int32
  private var closed = false

  /// Why a monitor socket could not be opened.
  struct Failure: Error, CustomStringConvertible {
    let description: String
  }

  init(_ address: MonitorAddress) throws(Failure) {
    self.address = address
    switch address.endpoint {
    case .unix(let path): fd = try Self.openUnix(path)
    case .tcp(let host, let port): fd = try Self.openTCP(host: host, port: port)
    }
  }

  /// Waits for a client; nil once the listener is closed.
  func accept() -> Int32? {
    while true {
      let client = Glibc.accept(fd, nil, nil)
      if client >= 0 {
        _ = fcntl(client, F_SETFD, FD_CLOEXEC)
        return client
      }
      if errno == EINTR || errno == ECONNABORTED { continue }
      return nil
    }
  }

  /// Stops accepting (waking a thread blocked in `accept`) and removes the socket file.
  func close() {
    guard !closed else { return }
    closed = true
    shutdown(fd, Int32(SHUT_RDWR))
    Glibc.close(fd)
    if case .unix(let path) = address.endpoint { unlink(path) }
  }

  private static func openUnix(_ path: String) throws(Failure) -> Int32 {
    let directory = path.lastIndex(of: "/").map { String(path[..<$0]) }.map { $0.isEmpty ? "/" : $0 } ?? "."
    var status = stat()
    if stat(directory, &status) != 0 || (status.st_mode & S_IFMT) != S_IFDIR {
      throw Failure(
        description:
          "monitor socket \(path): the directory \(directory) does not exist; create it or choose another path")
    }
    if lstat(path, &status) == 0 {
      guard (status.st_mode & S_IFMT) == S_IFSOCK else {
        throw Failure(
          description: "monitor socket \(path): the path exists and is not a socket; refusing to replace it")
      }
      if isServed(path) {
        throw Failure(
          description:
            "monitor socket \(path) is in use by a live process (a client could connect); stop it or choose another path"
        )
      }
      unlink(path)  // a stale socket left by a process that is gone
    }
    let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
    guard fd >= 0 else { throw Failure(description: "monitor socket \(path): socket(): \(lastError)") }
    // The socket is made under a temporary name beside the path and renamed into place once it
    // listens: a client that waits for the path to appear (as scripts do) never finds a socket
    // that refuses connections yet. (A path too long for that gets the socket directly.)
    let temporary = path + ".\(getpid()).new"
    let staged = temporary.utf8.count < MemoryLayout.size(ofValue: sockaddr_un().sun_path)
    let bindPath = staged ? temporary : path
    if staged { unlink(temporary) }
    var address = unixAddress(bindPath)
    let bound = withUnsafePointer(to: &address) {
      $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
    }
    // Whatever the umask: only this user may connect (a monitor can stop, reset and quit the
    // machine). Nobody can connect before listen(), so there is no window.
    guard bound == 0, chmod(bindPath, 0o600) == 0, listen(fd, 16) == 0, !staged || rename(temporary, path) == 0 else {
      let message = lastError
      Glibc.close(fd)
      if bound == 0 { unlink(bindPath) }
      throw Failure(description: "monitor socket \(path): cannot listen: \(message)")
    }
    return fd
  }

  private static func isServed(_ path: String) -> Bool {
    let probe = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
    guard probe >= 0 else { return false }
    defer { Glibc.close(probe) }
    var address = unixAddress(path)
    let connected = withUnsafePointer(to: &address) {
      $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
        connect(probe, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
      }
    }
    return connected == 0
  }

  static func unixAddress(_ path: String) -> sockaddr_un {
    var address = sockaddr_un()
    address.sun_family = sa_family_t(AF_UNIX)
    withUnsafeMutableBytes(of: &address.sun_path) { buffer in
      let bytes = Array(path.utf8.prefix(buffer.count - 1))
      buffer.copyBytes(from: bytes)
    }
    return address
  }

  private static func openTCP(host: String, port: UInt16) throws(Failure) -> Int32 {
    var hints = addrinfo()
    hints.ai_family = AF_UNSPEC
    hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
    hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV
    var list: UnsafeMutablePointer<addrinfo>?
    let status = getaddrinfo(host, String(port), &hints, &list)
    guard status == 0, let first = list else {
      throw Failure(description: "monitor address tcp:\(host):\(port): \(String(cString: gai_strerror(status)))")
    }
    defer { freeaddrinfo(list) }
    let fd = socket(first.pointee.ai_family, first.pointee.ai_socktype | Int32(SOCK_CLOEXEC.rawValue), 0)
    guard fd >= 0 else { throw Failure(description: "monitor address tcp:\(host):\(port): socket(): \(lastError)") }
    var one: Int32 = 1
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
    guard bind(fd, first.pointee.ai_addr, first.pointee.ai_addrlen) == 0, listen(fd, 16) == 0 else {
      let message = lastError
      Glibc.close(fd)
      throw Failure(description: "monitor address tcp:\(host):\(port): cannot listen: \(message)")
    }
    return fd
  }

  private static var lastError: String { String(cString: strerror(errno)) }
}
