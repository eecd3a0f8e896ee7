import Synchronization

/// Where a machine's start-up time goes: milestones stamped with CLOCK_MONOTONIC as they are
/// passed (configuration checked, KVM opened, RAM mapped, vCPUs made, devices built, the
/// payload loaded or the snapshot restored, the first guest entry), for `--stats`.
public final class StartupTrace: Sendable {
  /// The process-wide trace (one machine is started at a time; a reset starts it again).
  public static let shared = StartupTrace()

  private let marks = Mutex<[(name: String, nanoseconds: UInt64)]>([])

  /// Starts a new trace from now (`skvm` calls it first thing in `main`).
  public func begin(_ name: String = "start") {
    let now = monotonicNanoseconds()
    marks.withLock { $0 = [(name, now)] }
  }

  /// Records that `name` was reached now.
  public func mark(_ name: String) {
    let now = monotonicNanoseconds()
    marks.withLock { $0.append((name, now)) }
  }

  /// Records `name` unless it was recorded already (the first guest entry of any vCPU).
  func markOnce(_ name: String) {
    let now = monotonicNanoseconds()
    marks.withLock { marks in
      if !marks.contains(where: { $0.name == name }) { marks.append((name, now)) }
    }
  }

  /// One line: each step's milliseconds, and the total from the first mark.
  public var report: String {
    let marks = self.marks.withLock { $0 }
    guard let first = marks.first else { return "startup: not traced" }
    var steps: [String] = []
    for (previous, mark) in zip(marks, marks.dropFirst()) {
      steps.append("\(mark.name) \(Self.milliseconds(mark.nanoseconds &- previous.nanoseconds))")
    }
    let total = Self.milliseconds((marks.last?.nanoseconds ?? first.nanoseconds) &- first.nanoseconds)
    return "startup (ms): " + steps.joined(separator: ", ") + "; \(total) in all since \(first.name)"
  }

  private static func milliseconds(_ nanoseconds: UInt64) -> String {
    let tenths = (nanoseconds + 5_000) / 10_000
    return "\(tenths / 100).\(String(repeating: "0", count: tenths % 100 < 10 ? 1 : 0))\(tenths % 100)"
  }
}
