import Testing

@testable import Virtio

@Suite("virtio-pci common configuration")
struct VirtioCommonConfigTests {
  typealias R = VirtioCommonConfig.Register
  static let offered = VirtioFeature.version1 | VirtioFeature.eventIndex | 1 << 9

  @Test("Features are read and accepted 32 bits at a time; FEATURES_OK holds only for an offered subset with VERSION_1")
  func negotiation() {
    var config = VirtioCommonConfig(offeredFeatures: Self.offered, queueSizes: [256])
    _ = config.write(R.deviceFeatureSelect, width: 4, value: 1)
    #expect(config.read(R.deviceFeature, width: 4) == 1, "VERSION_1 is bit 32")
    _ = config.write(R.deviceFeatureSelect, width: 4, value: 0)
    #expect(config.read(R.deviceFeature, width: 4) == UInt64(1 << 29 | 1 << 9))
    // A driver asking for something not offered does not get FEATURES_OK.
    _ = config.write(R.driverFeatureSelect, width: 4, value: 0)
    _ = config.write(R.driverFeature, width: 4, value: 1 << 3)
    _ = config.write(
      R.deviceStatus, width: 1, value: UInt64(VirtioStatus.acknowledge | VirtioStatus.driver | VirtioStatus.featuresOK))
    #expect(config.status & VirtioStatus.featuresOK == 0)
    _ = config.write(R.driverFeature, width: 4, value: 1 << 29)
    _ = config.write(R.driverFeatureSelect, width: 4, value: 1)
    _ = config.write(R.driverFeature, width: 4, value: 1)
    _ = config.write(
      R.deviceStatus, width: 1, value: UInt64(VirtioStatus.acknowledge | VirtioStatus.driver | VirtioStatus.featuresOK))
    #expect(config.status & VirtioStatus.featuresOK != 0)
    #expect(config.negotiatedFeatures == VirtioFeature.version1 | VirtioFeature.eventIndex)
    // Features are frozen after FEATURES_OK.
    _ = config.write(R.driverFeatureSelect, width: 4, value: 0)
    _ = config.write(R.driverFeature, width: 4, value: 1 << 9)
    #expect(config.negotiatedFeatures == VirtioFeature.version1 | VirtioFeature.eventIndex)
  }

  @Test("Queue setup: power-of-two sizes up to the maximum, 32-bit halves of addresses, frozen once enabled")
  func queues() {
    var config = VirtioCommonConfig(offeredFeatures: Self.offered, queueSizes: [256, 128])
    #expect(config.read(R.numQueues, width: 2) == 2)
    _ = config.write(R.queueSelect, width: 2, value: 1)
    #expect(config.read(R.queueSize, width: 2) == 128)
    _ = config.write(R.queueSize, width: 2, value: 100)
    #expect(config.read(R.queueSize, width: 2) == 128, "not a power of two: ignored")
    _ = config.write(R.queueSize, width: 2, value: 512)
    #expect(config.read(R.queueSize, width: 2) == 128, "above the maximum: ignored")
    _ = config.write(R.queueSize, width: 2, value: 64)
    _ = config.write(R.queueDesc, width: 4, value: 0x1000)
    _ = config.write(R.queueDesc + 4, width: 4, value: 0x2)
    _ = config.write(R.queueDriver, width: 8, value: 0x3_0000)
    _ = config.write(R.queueEnable, width: 2, value: 1)
    _ = config.write(R.queueDesc, width: 4, value: 0x9999)
    _ = config.write(R.queueSize, width: 2, value: 32)
    #expect(config.queues[1].descriptorTable == 0x2_0000_1000 && config.queues[1].size == 64)
    #expect(config.queues[1].driverArea == 0x3_0000 && config.queues[1].enabled)
    _ = config.write(R.queueSelect, width: 2, value: 7)
    #expect(config.read(R.queueSize, width: 2) == 0, "a queue that does not exist reads size 0")
  }

  @Test("Writing 0 to the status resets everything and bumps the config generation; DRIVER_OK is an event")
  func statusAndReset() {
    var config = VirtioCommonConfig(offeredFeatures: Self.offered, queueSizes: [16])
    _ = config.write(R.queueEnable, width: 2, value: 1)
    #expect(config.write(R.deviceStatus, width: 1, value: UInt64(VirtioStatus.driverOK)) == .driverReady)
    #expect(config.write(R.deviceStatus, width: 1, value: UInt64(VirtioStatus.driverOK)) == .none)
    #expect(config.write(R.deviceStatus, width: 1, value: 0) == .reset)
    #expect(config.status == 0 && !config.queues[0].enabled && config.read(R.configGeneration, width: 1) == 1)
    config.markNeedsReset()
    #expect(config.status & VirtioStatus.needsReset != 0)
  }
}
