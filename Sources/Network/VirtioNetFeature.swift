/// virtio-net feature bits (virtio 1.2 §5.1.3), shared by the device and the back ends that
/// carry offloads for it.
public enum VirtioNetFeature {
  /// The device checksums partially checksummed frames from the driver.
  public static let checksum: UInt64 = 1 << 0
  /// The driver accepts frames with a partial checksum.
  public static let guestChecksum: UInt64 = 1 << 1
  /// `mtu` in the configuration is valid.
  public static let mtu: UInt64 = 1 << 3
  /// `mac` in the configuration is valid.
  public static let mac: UInt64 = 1 << 5
  public static let guestTSO4: UInt64 = 1 << 7
  public static let guestTSO6: UInt64 = 1 << 8
  public static let guestECN: UInt64 = 1 << 9
  public static let guestUFO: UInt64 = 1 << 10
  public static let hostTSO4: UInt64 = 1 << 11
  public static let hostTSO6: UInt64 = 1 << 12
  public static let hostECN: UInt64 = 1 << 13
  public static let hostUFO: UInt64 = 1 << 14
  /// Receive frames may span several buffers (`num_buffers` in the header).
  public static let mergeableReceiveBuffers: UInt64 = 1 << 15
  /// `status` in the configuration is valid (link up, announce).
  public static let status: UInt64 = 1 << 16
  /// The control queue exists.
  public static let controlQueue: UInt64 = 1 << 17
  /// Receive mode commands (promiscuous, all-multicast) and the MAC filter table.
  public static let controlReceive: UInt64 = 1 << 18
  /// The driver acknowledges announcements (sends gratuitous ARPs after a restore).
  public static let guestAnnounce: UInt64 = 1 << 21
  /// Several queue pairs.
  public static let multiqueue: UInt64 = 1 << 22
  /// The MAC address can be set through the control queue.
  public static let controlMACAddress: UInt64 = 1 << 23

  /// Every offload a tap with a virtio-net header carries (UFO is left out: Linux no longer
  /// accepts it from guests).
  public static let tapOffloads: UInt64 =
    checksum | guestChecksum | guestTSO4 | guestTSO6 | guestECN | hostTSO4 | hostTSO6 | hostECN
}
