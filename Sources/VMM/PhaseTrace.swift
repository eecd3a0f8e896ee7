import Glibc

/// Where one operation's time goes, phase by phase, printed on standard error when an
/// environment switch is set (`SKVM_TRACE_SAVEVM`, `SKVM_TRACE_MIGRATION`): marks stamped with
/// CLOCK_MONOTONIC, one line of milliseconds per phase. Off, it records nothing.
struct PhaseTrace {
  private let title: String
  private var marks: [(name: String, nanoseconds: UInt64)]?

  /// Starts a trace titled `title` (the line's prefix) if `variable` is set in the environment.
  init(_ title: String, enabledBy variable: String, start: UInt64 = monotonicNanoseconds()) {
    self.title = title
    marks = getenv(variable) != nil ? [("start", start)] : nil
  }

  /// Records that the phase `name` ended now.
  mutating func mark(_ name: String) {
    guard marks != nil else { return }
    marks?.append((name, monotonicNanoseconds()))
  }

  /// Prints the phases and the total, if tracing.
  func print() {
    guard let marks, let first = marks.first, let last = marks.last else { return }
    func milliseconds(_ nanoseconds: UInt64) -> String { "\(Double(nanoseconds / 1000) / 1000)" }
    let phases = zip(marks, marks.dropFirst()).map { "\($1.name) \(milliseconds($1.nanoseconds &- $0.nanoseconds))" }
    let line =
      "skvm: \(title) (ms): \(phases.joined(separator: ", ")); "
      + "\(milliseconds(last.nanoseconds &- first.nanoseconds)) in all\n"
    _ = line.withCString { Glibc.write(2, $0, strlen($0)) }
  }
}
