import Devices

/// A virtio device's own state beyond its rings and the transport's registers, saved with
/// the transport in snapshots (nil for devices that have none).
public enum VirtioDeviceState: Sendable, Codable, Equatable {
  case net(VirtioNetState)
  case scsi(VirtioSCSIState)
}

/// What virtio-net keeps beyond its rings: the link, the driver's receive filter and the
/// queue pairs it enabled.
public struct VirtioNetState: Sendable, Codable, Equatable {
  public var linkUp: Bool
  public var filter: VirtioNetReceiveFilter
  public var activePairs: Int
}
