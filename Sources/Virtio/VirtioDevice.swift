import Devices

/// A virtio device model behind a transport: what it offers and how it serves its queues.
/// The transport (`VirtioPCITransport`) owns feature negotiation, status and queue setup.
public protocol VirtioDevice: AnyObject, Sendable {
  /// The virtio device ID (2 block, 3 console, 4 entropy, …).
  var deviceType: UInt16 { get }
  /// Feature bits offered (the transport adds VERSION_1, EVENT_IDX and INDIRECT_DESC).
  var deviceFeatures: UInt64 { get }
  /// Queues the device has and the largest size of each.
  var queueSizes: [UInt16] { get }
  /// Reads the device-specific configuration.
  func readConfig(_ offset: Int, width: Int) -> UInt64
  /// Writes the device-specific configuration.
  func writeConfig(_ offset: Int, width: Int, value: UInt64)
  /// The driver set DRIVER_OK: these queues (by index) are live with these features, and
  /// `interrupt(queue)` raises a queue's interrupt until the next reset.
  func activate(queues: [SplitVirtqueue], features: UInt64, interrupt: @escaping @Sendable (Int) -> Void)
  /// Where the device is in each live queue (empty when not activated), for snapshots.
  var queuePositions: [SplitVirtqueue.Position] { get }
  /// The driver kicked queue `index`: serve what it made available. False when the queue
  /// broke the rules (the transport then sets DEVICE_NEEDS_RESET). `onIOThread`: the call
  /// comes from the queue's own I/O thread, which may block on the host (not a vCPU's).
  func notify(queue index: Int, onIOThread: Bool) -> Bool
  /// The driver reset the device: stop using the queues (and the interrupt given with them).
  func reset()
  /// The machine was restored from a snapshot with the device live.
  func restored()
  /// The device's own state beyond its rings, for snapshots (nil: it has none).
  var deviceState: VirtioDeviceState? { get }
  /// Restores what `deviceState` saved, before the transport hands the queues over again;
  /// throws without changing anything when the state does not fit this device.
  func restore(deviceState: VirtioDeviceState) throws(DeviceStateError)
}

extension VirtioDevice {
  /// The machine was restored from a snapshot with this device live (after `activate`): a
  /// device may tell the driver (virtio-net announces itself). Nothing by default.
  public func restored() {}

  /// No state beyond the rings, by default.
  public var deviceState: VirtioDeviceState? { nil }

  /// A device with no state of its own takes none.
  public func restore(deviceState: VirtioDeviceState) throws(DeviceStateError) {
    throw DeviceStateError("saved device state for a virtio device (type \(deviceType)) that keeps none")
  }

  /// Activates with no interrupt delivery (for tests and fuzzing, which poll the rings).
  public func activate(queues: [SplitVirtqueue], features: UInt64) {
    activate(queues: queues, features: features, interrupt: { _ in })
  }
}

/// Feature bits of the transport and rings (virtio 1.2 §6).
public enum VirtioFeature {
  public static let indirectDescriptors: UInt64 = 1 << 28
  public static let eventIndex: UInt64 = 1 << 29
  public static let version1: UInt64 = 1 << 32
}

/// Device status bits (virtio 1.2 §2.1).
public enum VirtioStatus {
  public static let acknowledge: UInt8 = 1
  public static let driver: UInt8 = 2
  public static let driverOK: UInt8 = 4
  public static let featuresOK: UInt8 = 8
  public static let needsReset: UInt8 = 64
  public static let failed: UInt8 = 128
}

extension VirtioDevice {
  /// A kick from a thread that must not block on host I/O (a vCPU's, a test's).
  public func notify(queue index: Int) -> Bool { notify(queue: index, onIOThread: false) }
}
