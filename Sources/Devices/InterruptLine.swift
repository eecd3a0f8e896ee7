/// An interrupt input of the machine's interrupt controllers (a GSI), as a device sees it.
///
/// Devices drive the line's level: high while they want service, low otherwise.
/// Edge-triggered inputs see the rising edge; level-triggered ones the level.
public protocol InterruptLine: Sendable {
  func set(high: Bool)
}

/// A line that goes nowhere, for devices whose interrupt is not wired up.
public struct DisconnectedInterruptLine: InterruptLine {
  public init() {}
  public func set(high: Bool) {}
}
