import Glibc

/// Puts the controlling terminal in raw mode for a guest console and restores it on
/// every way out: normal return, `exit()`, and fatal signals the process can catch.
enum TerminalMode {
  nonisolated(unsafe) private static var saved: termios?

  /// Raw input (every key goes to the guest, Ctrl-C included), output post-processing kept.
  static func enterRaw(fd: Int32 = STDIN_FILENO) {
    guard isatty(fd) != 0, saved == nil else { return }
    var original = termios()
    guard tcgetattr(fd, &original) == 0 else { return }
    saved = original
    var raw = original
    cfmakeraw(&raw)
    raw.c_oflag |= tcflag_t(OPOST)
    tcsetattr(fd, TCSANOW, &raw)
    atexit { TerminalMode.restore() }
  }

  static func restore(fd: Int32 = STDIN_FILENO) {
    guard var original = saved else { return }
    tcsetattr(fd, TCSANOW, &original)
    saved = nil
  }
}
