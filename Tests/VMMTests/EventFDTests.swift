import SwiftKVM
import Testing

/// ioeventfd and irqfd, the paths virtio notifications and interrupts will take.
@Suite("eventfds")
struct EventFDTests {
  @Test("A guest write to an ioeventfd port completes in the kernel and signals the eventfd")
  func ioEventFD() async throws {
    // mov $0x780,%dx; mov $7,%al; out %al,(%dx); out %al,(%dx); mov $0,%al; out %al,$0xf4
    let program: [UInt8] = [0xBA, 0x80, 0x07, 0xB0, 0x07, 0xEE, 0xEE, 0xB0, 0x00, 0xE6, 0xF4]
    let configuration = VirtualMachineConfiguration(
      memorySize: 16 << 20, boot: .flatImage(bytes: program, entry: .real))
    let event = try EventFD()
    let interrupt = try EventFD()
    let run = try await GuestRunner.run(configuration, timeout: 30) { machine in
      try machine.vm.registerIOEvent(event.rawValue, at: .port(0x780), length: 1)
      try machine.vm.registerIRQFD(interrupt.rawValue, gsi: 5)
      interrupt.signal()
      try machine.vm.unregisterIRQFD(interrupt.rawValue, gsi: 5)
    }
    #expect(run.exit == VirtualMachineExit.debugExit(value: 0))
    #expect(try event.wait() == 2, "two writes, two signals")
    #expect(run.statistics.unclaimedPortAccesses == 0, "no write reached the VMM")
    #expect(run.statistics.count(of: 2) == 1, "only the debug-exit write exited to the VMM")
  }

  @Test("A datamatch ioeventfd only fires for its value")
  func dataMatch() async throws {
    // mov $0x780,%dx; mov $1,%al; out; mov $2,%al; out; mov $0,%al; out %al,$0xf4
    let program: [UInt8] = [0xBA, 0x80, 0x07, 0xB0, 0x01, 0xEE, 0xB0, 0x02, 0xEE, 0xB0, 0x00, 0xE6, 0xF4]
    let configuration = VirtualMachineConfiguration(
      memorySize: 16 << 20, boot: .flatImage(bytes: program, entry: .real))
    let event = try EventFD()
    let device = RecordingDevice()
    let run = try await GuestRunner.run(configuration, timeout: 30) { machine in
      try machine.vm.registerIOEvent(event.rawValue, at: .port(0x780), length: 1, match: 2)
      try machine.addDevice(device, port: 0x780, size: 1)
    }
    #expect(run.exit == VirtualMachineExit.debugExit(value: 0))
    #expect(try event.wait() == 1)
    #expect(device.log == [RecordingDevice.Access(offset: 0, width: 1, value: 1, isWrite: true)])
  }
}
