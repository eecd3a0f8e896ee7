import Glibc
import Synchronization

/// Where a console device's output goes.
public protocol ConsoleOutput: Sendable {
  /// Writes guest output bytes.
  func write(_ bytes: UnsafeRawBufferPointer)
}

extension ConsoleOutput {
  /// Writes one byte.
  public func write(byte: UInt8) {
    withUnsafeBytes(of: byte) { write($0) }
  }
}

/// Console output to a host file descriptor (stdout by default), written through at once.
public final class FileDescriptorConsoleOutput: ConsoleOutput {
  public let fd: Int32

  public init(fd: Int32 = STDOUT_FILENO) {
    self.fd = fd
  }

  public func write(_ bytes: UnsafeRawBufferPointer) {
    guard var next = bytes.baseAddress else { return }
    var remaining = bytes.count
    while remaining > 0 {
      let written = Glibc.write(fd, next, remaining)
      if written < 0 {
        if errno == EINTR || errno == EAGAIN { continue }
        return  // the reader went away; the guest keeps running
      }
      remaining -= written
      next += written
    }
  }
}

/// Console output kept in memory, for tests and embedders that read it back.
public final class CapturedConsoleOutput: ConsoleOutput {
  private let storage = Mutex<[UInt8]>([])
  /// The most bytes kept; older output is dropped first.
  public let limit: Int

  public init(limit: Int = 1 << 20) {
    self.limit = limit
  }

  public func write(_ bytes: UnsafeRawBufferPointer) {
    storage.withLock { buffer in
      buffer.append(contentsOf: bytes)
      if buffer.count > limit { buffer.removeFirst(buffer.count - limit) }
    }
  }

  /// Everything captured so far.
  public var bytes: [UInt8] { storage.withLock { $0 } }

  /// Everything captured so far, decoded as UTF-8.
  public var text: String { String(decoding: bytes, as: UTF8.self) }
}

/// Console output thrown away (`--console none`).
public struct DiscardedConsoleOutput: ConsoleOutput {
  public init() {}
  public func write(_ bytes: UnsafeRawBufferPointer) {}
}
