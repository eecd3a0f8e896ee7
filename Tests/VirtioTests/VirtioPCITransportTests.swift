import Devices
import GuestMemory
import Synchronization
import Testing

@testable import Virtio

/// A device that records what the transport tells it.
final class RecordingDevice: VirtioDevice, @unchecked Sendable {
  var interrupt: @Sendable (Int) -> Void = { _ in }
  var queuePositions: [SplitVirtqueue.Position] { activated.map(\.position) }
  let deviceType: UInt16 = 4
  let deviceFeatures: UInt64 = 0
  let queueSizes: [UInt16] = [64]
  var activated: [SplitVirtqueue] = []
  var kicks: [Int] = []
  var resets = 0
  func readConfig(_ offset: Int, width: Int) -> UInt64 { 0xAB }
  func writeConfig(_ offset: Int, width: Int, value: UInt64) {}
  func activate(queues: [SplitVirtqueue], features: UInt64, interrupt: @escaping @Sendable (Int) -> Void) {
    activated = queues
    self.interrupt = interrupt
  }
  func notify(queue index: Int, onIOThread: Bool) -> Bool {
    kicks.append(index)
    return true
  }
  func reset() { resets += 1 }
}

/// Records interrupts.
final class RecordingSink: VirtioInterruptSink, @unchecked Sendable {
  var messages: [(UInt64, UInt32)] = []
  var line = false
  func deliverMessage(vector: Int, address: UInt64, data: UInt32) { messages.append((address, data)) }
  func setLine(_ asserted: Bool) { line = asserted }
}

@Suite("virtio-pci transport")
struct VirtioPCITransportTests {
  typealias R = VirtioCommonConfig.Register

  static func make() throws -> (VirtioPCITransport, RecordingDevice, RecordingSink) {
    let memory = try GuestMemory(ranges: [(0, 1 << 20)])
    let device = RecordingDevice()
    let sink = RecordingSink()
    return (VirtioPCITransport(device: device, memory: memory, sink: sink, classCode: 0x00_FF00), device, sink)
  }

  @Test(
    "Identity and the capability chain: MSI-X, then common, notify, ISR, device and PCI-access structures, then PCI Express"
  )
  func capabilities() throws {
    let (transport, _, _) = try Self.make()
    #expect(transport.configRead(0, width: 4) == 0x1044_1AF4, "virtio modern device ID 0x1040 + type")
    #expect(transport.configRead(0x06, width: 2) & 0x10 != 0, "capability list present")
    var offset = Int(transport.configRead(0x34, width: 1))
    var found: [UInt32] = []
    while offset != 0 && found.count < 10 {
      let id = transport.configRead(offset, width: 1)
      found.append(id == 0x09 ? 0x900 + transport.configRead(offset + 3, width: 1) : id)
      offset = Int(transport.configRead(offset + 1, width: 1))
    }
    #expect(found == [0x11, 0x901, 0x902, 0x903, 0x904, 0x905, 0x10])
  }

  @Test("Negotiation and queue setup through BAR 0; DRIVER_OK activates the device; a kick reaches it")
  func lifecycle() throws {
    let (transport, device, _) = try Self.make()
    transport.barWrite(UInt64(R.deviceFeatureSelect), width: 4, value: 1)
    #expect(transport.barRead(UInt64(R.deviceFeature), width: 4) & 1 == 1, "VERSION_1 offered")
    transport.barWrite(UInt64(R.driverFeatureSelect), width: 4, value: 1)
    transport.barWrite(UInt64(R.driverFeature), width: 4, value: 1)
    transport.barWrite(UInt64(R.deviceStatus), width: 1, value: 0x0B)
    #expect(transport.barRead(UInt64(R.deviceStatus), width: 1) == 0x0B, "FEATURES_OK kept")
    transport.barWrite(UInt64(R.queueSize), width: 2, value: 16)
    transport.barWrite(UInt64(R.queueDesc), width: 8, value: 0x1000)
    transport.barWrite(UInt64(R.queueDriver), width: 8, value: 0x2000)
    transport.barWrite(UInt64(R.queueDevice), width: 8, value: 0x3000)
    transport.barWrite(UInt64(R.queueEnable), width: 2, value: 1)
    transport.barWrite(UInt64(R.deviceStatus), width: 1, value: 0x0F)
    #expect(
      device.activated.count == 1 && device.activated[0].size == 16 && device.activated[0].descriptorTable == 0x1000)
    transport.barWrite(VirtioPCITransport.Layout.notify, width: 2, value: 0)
    #expect(device.kicks == [0])
    #expect(transport.barRead(VirtioPCITransport.Layout.device, width: 1) == 0xAB)
    transport.barWrite(UInt64(R.deviceStatus), width: 1, value: 0)
    #expect(device.resets == 1)
  }

  @Test("Rings outside guest memory at DRIVER_OK: NEEDS_RESET and a config interrupt, the device is not activated")
  func badRings() throws {
    let (transport, device, sink) = try Self.make()
    transport.barWrite(UInt64(R.queueDesc), width: 8, value: 0xFFFF_0000)
    transport.barWrite(UInt64(R.queueEnable), width: 2, value: 1)
    transport.barWrite(UInt64(R.deviceStatus), width: 1, value: 0x07)
    #expect(device.activated.isEmpty)
    #expect(transport.barRead(UInt64(R.deviceStatus), width: 1) & 0x40 != 0)
    #expect(sink.line, "INTx raised for the config change")
    #expect(transport.barRead(VirtioPCITransport.Layout.isr, width: 1) == 2)
    #expect(!sink.line, "reading the ISR lowers the line")
  }

  @Test("MSI-X: a programmed vector delivers its message; masked, it waits pending until unmasked")
  func msix() throws {
    let (transport, _, sink) = try Self.make()
    transport.configWrite(0x42, width: 2, value: 0x8000)  // MSI-X enable
    transport.barWrite(UInt64(R.queueMSIXVector), width: 2, value: 1)
    let entry = VirtioPCITransport.Layout.msixTable + 16
    transport.barWrite(entry, width: 8, value: 0xFEE0_0000)
    transport.barWrite(entry + 8, width: 4, value: 0x4041)
    transport.signal(queue: 0)
    #expect(sink.messages.isEmpty, "vectors start masked")
    #expect(transport.barRead(VirtioPCITransport.Layout.msixPending, width: 1) == 0b10)
    transport.barWrite(entry + 12, width: 4, value: 0)
    #expect(sink.messages.count == 1 && sink.messages[0].0 == 0xFEE0_0000 && sink.messages[0].1 == 0x4041)
    transport.signal(queue: 0)
    #expect(sink.messages.count == 2)
    #expect(!sink.line, "no INTx while MSI-X is on")
  }
}
