import KVM

/// Exit counts (and, when timed, time spent) per exit reason, summed over vCPUs.
public struct ExitStatistics: Sendable, Equatable {
  /// Exits per `KVM_EXIT_*` reason.
  public var counts: [UInt64]
  /// Nanoseconds the VMM spent handling exits, per reason (0 when not timed).
  public var handlingNanoseconds: [UInt64]
  /// Nanoseconds spent inside `KVM_RUN` (0 when not timed).
  public var guestNanoseconds: UInt64 = 0
  /// Port accesses no device claimed.
  public var unclaimedPortAccesses: UInt64 = 0
  /// MMIO accesses no device claimed.
  public var unclaimedMMIOAccesses: UInt64 = 0
  /// Times a vCPU was kicked out of `KVM_RUN` by a signal or `immediate_exit`.
  public var interruptions: UInt64 = 0
  /// `int3` instructions KVM could not emulate, completed by injecting #BP (PVM hosts).
  public var breakpointsInjected: UInt64 = 0
  /// `fwait` instructions KVM could not emulate, skipped (PVM hosts).
  public var fwaitsSkipped: UInt64 = 0

  public init() {
    counts = Array(repeating: 0, count: ExitReasonName.tableSize)
    handlingNanoseconds = Array(repeating: 0, count: ExitReasonName.tableSize)
  }

  /// All exits of any reason.
  public var totalExits: UInt64 { counts.reduce(0, +) }

  /// Exits for one reason.
  public func count(of reason: Int32) -> UInt64 {
    reason >= 0 && Int(reason) < counts.count ? counts[Int(reason)] : 0
  }

  /// Adds another vCPU's figures.
  public mutating func add(_ other: ExitStatistics) {
    for index in counts.indices {
      counts[index] += other.counts[index]
      handlingNanoseconds[index] += other.handlingNanoseconds[index]
    }
    guestNanoseconds += other.guestNanoseconds
    unclaimedPortAccesses += other.unclaimedPortAccesses
    unclaimedMMIOAccesses += other.unclaimedMMIOAccesses
    interruptions += other.interruptions
    breakpointsInjected += other.breakpointsInjected
    fwaitsSkipped += other.fwaitsSkipped
  }

  /// A table for the terminal.
  public func report(timed: Bool, cpuCount: Int) -> String {
    var lines = ["exits (\(cpuCount) vCPU\(cpuCount == 1 ? "" : "s"), \(totalExits) in all):"]
    lines.append(
      "  " + "reason".padding(18) + "count".leftPadding(12)
        + (timed ? "handling ms".leftPadding(14) + "mean µs".leftPadding(10) : ""))
    for (reason, count) in counts.enumerated() where count > 0 {
      var line = "  " + ExitReasonName.name(of: UInt32(reason)).padding(18) + String(count).leftPadding(12)
      if timed {
        let nanoseconds = handlingNanoseconds[reason]
        line += format(Double(nanoseconds) / 1e6, decimals: 3).leftPadding(14)
        line += format(Double(nanoseconds) / Double(count) / 1e3, decimals: 3).leftPadding(10)
      }
      lines.append(line)
    }
    if timed { lines.append("  time in guest (KVM_RUN): \(format(Double(guestNanoseconds) / 1e6, decimals: 3)) ms") }
    lines.append(
      "  unclaimed port accesses: \(unclaimedPortAccesses), unclaimed MMIO accesses: \(unclaimedMMIOAccesses)")
    lines.append("  kicks (KVM_RUN interrupted): \(interruptions)")
    if breakpointsInjected + fwaitsSkipped > 0 {
      lines.append(
        "  instructions KVM could not emulate, completed by skvm: int3 \(breakpointsInjected), fwait \(fwaitsSkipped)")
    }
    return lines.joined(separator: "\n")
  }
}

/// Formats `value` with a fixed number of decimals, without Foundation.
func format(_ value: Double, decimals: Int) -> String {
  guard value.isFinite else { return "-" }
  var scale = 1.0
  for _ in 0..<decimals { scale *= 10 }
  let scaled = (abs(value) * scale).rounded()
  let whole = UInt64(scaled / scale)
  let fraction = UInt64(scaled - Double(whole) * scale)
  var fractionText = String(fraction)
  while fractionText.count < decimals { fractionText = "0" + fractionText }
  return (value < 0 ? "-" : "") + String(whole) + (decimals > 0 ? "." + fractionText : "")
}

extension String {
  func padding(_ width: Int) -> String { count >= width ? self : self + String(repeating: " ", count: width - count) }
  func leftPadding(_ width: Int) -> String {
    count >= width ? " " + self : String(repeating: " ", count: width - count) + self
  }
}
