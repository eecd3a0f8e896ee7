import Synchronization

/// The host bridge at 00:00.0 (Red Hat's generic PCIe host bridge IDs, as QEMU's gpex
/// uses): class 0x060000, no BARs.
public final class PCIHostBridge: PCIFunction {
  public let name = "pcie-host-bridge"
  private let space = Mutex(
    PCIConfigSpace(vendor: 0x1B36, device: 0x0008, classCode: 0x06_0000, subsystemVendor: 0x1AF4, subsystem: 0x1100))

  public init() {}

  public func configRead(_ offset: Int, width: Int) -> UInt32 { space.withLock { $0.read(offset, width: width) } }

  public func configWrite(_ offset: Int, width: Int, value: UInt32) {
    space.withLock { $0.write(offset, width: width, value: value) }
  }

  public var configSpace: PCIConfigSpace { space.withLock { $0 } }
}

extension PCIHostBridge: StatefulDevice {
  public static let stateVersion = 1

  public func saveState() -> PCIConfigSpace { space.withLock { $0 } }

  public func restoreState(_ saved: PCIConfigSpace) throws(DeviceStateError) {
    try saved.checkShape(like: space.withLock { $0 })
    space.withLock { $0 = saved }
  }
}
