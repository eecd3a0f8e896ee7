import Devices
import Glibc

/// Feeds bytes read from a host file descriptor (the terminal, a pipe) to the guest's
/// serial port, on its own thread, and watches for the escape sequence (Ctrl-A x).
///
/// When the serial port's receive buffer is full the pump waits rather than drop
/// input, so a pasted or piped script arrives whole.
public final class ConsoleInputPump: @unchecked Sendable {
  /// Ctrl-A, then `x`, quits; Ctrl-A twice sends one Ctrl-A.
  public static let escapeByte: UInt8 = 0x01

  private let fd: Int32
  private let deliver: @Sendable (ArraySlice<UInt8>) -> Int
  private let onEscape: @Sendable () -> Void
  private var thread: OSThread?

  /// Pumps `fd` into `deliver` (which returns how many bytes it took); `onEscape` runs when
  /// the user types Ctrl-A x.
  public init(
    fd: Int32, deliver: @escaping @Sendable (ArraySlice<UInt8>) -> Int, onEscape: @escaping @Sendable () -> Void
  ) {
    self.fd = fd
    self.deliver = deliver
    self.onEscape = onEscape
  }

  /// Pumps `fd` into `serial`'s receive buffer.
  public convenience init(fd: Int32, serial: SerialPort, onEscape: @escaping @Sendable () -> Void) {
    self.init(fd: fd, deliver: { serial.receive($0) }, onEscape: onEscape)
  }

  /// Starts the reader thread. It ends at end of file; it is not joined (it may sit in read()).
  public func start() {
    thread = try? OSThread(name: "console-in") { [self] in pump() }
  }

  private func pump() {
    var buffer = [UInt8](repeating: 0, count: 256)
    var escapePending = false
    while true {
      let count = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
      if count < 0, errno == EINTR { continue }
      if count <= 0 { return }
      var forward: [UInt8] = []
      for byte in buffer[0..<count] {
        if escapePending {
          escapePending = false
          if byte == UInt8(ascii: "x") || byte == UInt8(ascii: "X") {
            onEscape()
            return
          }
          forward.append(byte)
        } else if byte == Self.escapeByte {
          escapePending = true
        } else {
          forward.append(byte)
        }
      }
      var remaining = forward[...]
      while !remaining.isEmpty {
        let accepted = deliver(remaining)
        remaining = remaining.dropFirst(accepted)
        if !remaining.isEmpty { usleep(1000) }
      }
    }
  }
}
