import Devices

/// The virtio-pci common configuration structure (virtio 1.2 §4.1.4.3) as a plain value:
/// feature negotiation, device status and per-queue setup, driven by the driver's register
/// writes. It checks what the driver may do (features it was not offered, queues it did
/// not set up correctly) and never trusts a value it wrote.
public struct VirtioCommonConfig: Sendable, Equatable, Codable {
  /// Per-queue state the driver programs.
  public struct QueueState: Sendable, Equatable, Codable {
    public var maximumSize: UInt16
    public var size: UInt16
    public var msixVector: UInt16 = 0xFFFF
    public var enabled = false
    public var descriptorTable: UInt64 = 0
    public var driverArea: UInt64 = 0
    public var deviceArea: UInt64 = 0
  }

  public let offeredFeatures: UInt64
  public private(set) var driverFeatures: UInt64 = 0
  public private(set) var status: UInt8 = 0
  public private(set) var configGeneration: UInt8 = 0
  public var configMSIXVector: UInt16 = 0xFFFF
  public private(set) var queues: [QueueState]
  private var deviceFeatureSelect: UInt32 = 0
  private var driverFeatureSelect: UInt32 = 0
  private var queueSelect: UInt16 = 0

  /// Register offsets.
  public enum Register {
    public static let deviceFeatureSelect = 0x00
    public static let deviceFeature = 0x04
    public static let driverFeatureSelect = 0x08
    public static let driverFeature = 0x0C
    public static let msixConfig = 0x10
    public static let numQueues = 0x12
    public static let deviceStatus = 0x14
    public static let configGeneration = 0x15
    public static let queueSelect = 0x16
    public static let queueSize = 0x18
    public static let queueMSIXVector = 0x1A
    public static let queueEnable = 0x1C
    public static let queueNotifyOff = 0x1E
    public static let queueDesc = 0x20
    public static let queueDriver = 0x28
    public static let queueDevice = 0x30
    public static let size = 0x38
  }

  /// What a register write asks of the transport beyond the state change.
  public enum Effect: Equatable {
    case none
    /// The driver wrote 0 to device_status: reset the device.
    case reset
    /// The driver set DRIVER_OK.
    case driverReady
  }

  public init(offeredFeatures: UInt64, queueSizes: [UInt16]) {
    self.offeredFeatures = offeredFeatures
    queues = queueSizes.map { QueueState(maximumSize: $0, size: $0) }
  }

  public var negotiatedFeatures: UInt64 { driverFeatures & offeredFeatures }

  public func read(_ offset: Int, width: Int) -> UInt64 {
    let queue = Int(queueSelect) < queues.count ? queues[Int(queueSelect)] : nil
    let value: UInt64
    switch offset {
    case Register.deviceFeatureSelect: value = UInt64(deviceFeatureSelect)
    case Register.deviceFeature:
      value = deviceFeatureSelect < 2 ? offeredFeatures >> (32 * UInt64(deviceFeatureSelect)) & 0xFFFF_FFFF : 0
    case Register.driverFeatureSelect: value = UInt64(driverFeatureSelect)
    case Register.driverFeature:
      value = driverFeatureSelect < 2 ? driverFeatures >> (32 * UInt64(driverFeatureSelect)) & 0xFFFF_FFFF : 0
    case Register.msixConfig: value = UInt64(configMSIXVector)
    case Register.numQueues: value = UInt64(queues.count)
    case Register.deviceStatus: value = UInt64(status)
    case Register.configGeneration: value = UInt64(configGeneration)
    case Register.queueSelect: value = UInt64(queueSelect)
    case Register.queueSize: value = UInt64(queue?.size ?? 0)
    case Register.queueMSIXVector: value = UInt64(queue?.msixVector ?? 0xFFFF)
    case Register.queueEnable: value = queue?.enabled == true ? 1 : 0
    case Register.queueNotifyOff: value = UInt64(queueSelect)
    case Register.queueDesc: value = queue?.descriptorTable ?? 0
    case Register.queueDesc + 4: value = (queue?.descriptorTable ?? 0) >> 32
    case Register.queueDriver: value = queue?.driverArea ?? 0
    case Register.queueDriver + 4: value = (queue?.driverArea ?? 0) >> 32
    case Register.queueDevice: value = queue?.deviceArea ?? 0
    case Register.queueDevice + 4: value = (queue?.deviceArea ?? 0) >> 32
    default: value = 0
    }
    return width >= 8 ? value : value & ((1 << (8 * UInt64(width))) - 1)
  }

  public mutating func write(_ offset: Int, width: Int, value: UInt64) -> Effect {
    let selected = Int(queueSelect) < queues.count ? Int(queueSelect) : nil
    // Queue registers may change only before the queue is enabled (virtio 1.2 §4.1.4.3.2).
    let queueWritable = selected.map { !queues[$0].enabled } ?? false
    switch offset {
    case Register.deviceFeatureSelect: deviceFeatureSelect = UInt32(truncatingIfNeeded: value)
    case Register.driverFeatureSelect: driverFeatureSelect = UInt32(truncatingIfNeeded: value)
    case Register.driverFeature:
      guard status & VirtioStatus.featuresOK == 0, driverFeatureSelect < 2 else { break }
      let shift = 32 * UInt64(driverFeatureSelect)
      driverFeatures = driverFeatures & ~(0xFFFF_FFFF << shift) | (value & 0xFFFF_FFFF) << shift
    case Register.msixConfig: configMSIXVector = UInt16(truncatingIfNeeded: value)
    case Register.deviceStatus: return writeStatus(UInt8(truncatingIfNeeded: value))
    case Register.queueSelect: queueSelect = UInt16(truncatingIfNeeded: value)
    case Register.queueSize:
      guard let index = selected, queueWritable else { break }
      let size = UInt16(truncatingIfNeeded: value)
      // A power of two no larger than the maximum; anything else leaves the size alone.
      if size > 0, size <= queues[index].maximumSize, size.nonzeroBitCount == 1 { queues[index].size = size }
    case Register.queueMSIXVector:
      if let index = selected { queues[index].msixVector = UInt16(truncatingIfNeeded: value) }
    case Register.queueEnable:
      if let index = selected, value & 1 == 1 { queues[index].enabled = true }
    case Register.queueDesc, Register.queueDesc + 4, Register.queueDriver, Register.queueDriver + 4,
      Register.queueDevice, Register.queueDevice + 4:
      guard let index = selected, queueWritable else { break }
      let high = (offset - Register.queueDesc) % 8 == 4
      func merge(_ old: UInt64) -> UInt64 {
        if width == 8 { return value }
        return high ? old & 0xFFFF_FFFF | (value & 0xFFFF_FFFF) << 32 : old & ~0xFFFF_FFFF | value & 0xFFFF_FFFF
      }
      switch (offset - Register.queueDesc) / 8 {
      case 0: queues[index].descriptorTable = merge(queues[index].descriptorTable)
      case 1: queues[index].driverArea = merge(queues[index].driverArea)
      default: queues[index].deviceArea = merge(queues[index].deviceArea)
      }
    default: break
    }
    return .none
  }

  private mutating func writeStatus(_ value: UInt8) -> Effect {
    if value == 0 {
      let generation = configGeneration
      self = VirtioCommonConfig(offeredFeatures: offeredFeatures, queueSizes: queues.map(\.maximumSize))
      configGeneration = generation &+ 1
      return .reset
    }
    var accepted = value
    // FEATURES_OK only for a subset of what was offered, including VERSION_1.
    if value & VirtioStatus.featuresOK != 0 && status & VirtioStatus.featuresOK == 0 {
      let valid = driverFeatures & ~offeredFeatures == 0 && driverFeatures & VirtioFeature.version1 != 0
      if !valid { accepted &= ~VirtioStatus.featuresOK }
    }
    let becameReady = accepted & VirtioStatus.driverOK != 0 && status & VirtioStatus.driverOK == 0
    status = accepted
    return becameReady ? .driverReady : .none
  }

  /// The device needs the driver to reset it (a malformed queue): sets DEVICE_NEEDS_RESET.
  public mutating func markNeedsReset() {
    status |= VirtioStatus.needsReset
    configGeneration &+= 1
  }

  /// Checks that `self`, decoded from an untrusted snapshot, could have been reached from
  /// `reference` (this device's fresh configuration) by register writes: the same features
  /// offered and queues, sizes within their maxima and powers of two, features accepted only
  /// from those offered, a queue selector in range.
  public func checkShape(like reference: VirtioCommonConfig) throws(DeviceStateError) {
    guard offeredFeatures == reference.offeredFeatures, driverFeatures & ~offeredFeatures == 0 else {
      throw DeviceStateError("the saved device was offered or accepted other features than this one offers")
    }
    guard queues.count == reference.queues.count,
      zip(queues, reference.queues).allSatisfy({ saved, fresh in
        saved.maximumSize == fresh.maximumSize && saved.size <= saved.maximumSize && saved.size.nonzeroBitCount <= 1
      })
    else { throw DeviceStateError("the saved device has other queues than this one") }
  }
}
