/// A device whose guest-visible state is a plain, versioned value it can save and restore:
/// registers, FIFOs, latches, the level it drives on its interrupt line.
///
/// `restoreState` is called on a freshly built device of the same configuration, before any
/// vCPU runs; it replaces the state wholesale and re-drives the interrupt line to match.
public protocol StatefulDevice: AnyObject, Sendable {
  /// The saved state. Decoded from untrusted streams: `restoreState` checks every field.
  associatedtype State: Codable & Sendable
  /// Bumped whenever `State` changes shape or meaning; a stream of another version is refused.
  static var stateVersion: Int { get }
  /// The state now (the machine is paused and quiesced when a snapshot asks).
  func saveState() -> State
  /// Replaces the state; throws when a field is out of range for this device.
  func restoreState(_ state: State) throws(DeviceStateError)
}

/// A saved device state that cannot be applied.
public struct DeviceStateError: Error, CustomStringConvertible, Equatable {
  public let description: String
  public init(_ description: String) { self.description = description }
}

/// The state of a device that keeps none the guest can see (a POST code port, pvpanic).
public struct NoDeviceState: Codable, Sendable, Equatable {
  public init() {}
}

extension PostCodePort: StatefulDevice {
  public static let stateVersion = 1
  public func saveState() -> NoDeviceState { NoDeviceState() }
  public func restoreState(_ state: NoDeviceState) throws(DeviceStateError) {}
}

extension PanicNotifier: StatefulDevice {
  public static let stateVersion = 1
  public func saveState() -> NoDeviceState { NoDeviceState() }
  public func restoreState(_ state: NoDeviceState) throws(DeviceStateError) {}
}

extension DebugExitPort: StatefulDevice {
  public static let stateVersion = 1
  public func saveState() -> NoDeviceState { NoDeviceState() }
  public func restoreState(_ state: NoDeviceState) throws(DeviceStateError) {}
}
