import Foundation
import SwiftKVM
import Testing

/// Probe guests under the real /dev/kvm: small freestanding programs that set up
/// the CPU at ring 0, drop to ring 3 and exercise one thing each.
@Suite("Probe guests", .serialized)
struct ProbeGuestTests {
  @Test("A probe reaches CPL3, prints and exits through the debug port")
  func hello() async throws {
    let run = try await GuestRunner.runProbe("hello")
    #expect(run.passed(expecting: ["running at CPL3"]), "\(run.output)")
    #expect(run.exit.exitStatus == 1)
  }

  @Test(
    "virtio-blk from a probe: PCI enumeration, reads of the host's pattern, writes the host sees, bad requests, five in flight, and hostile chains the VMM survives"
  )
  func virtioBlock() async throws {
    let path = FileManager.default.temporaryDirectory.appendingPathComponent("skvm-probe-vblk-\(getpid()).raw").path
    defer { try? FileManager.default.removeItem(atPath: path) }
    let pattern = (0..<(1 << 20)).map { UInt8(truncatingIfNeeded: ($0 / 512) * 7 + 1) }
    try Data(pattern).write(to: URL(fileURLWithPath: path))
    var configuration = VirtualMachineConfiguration(
      name: "virtio_blk", memorySize: 64 << 20,
      boot: .flatImage(bytes: try ProbeBuilder.binary("virtio_blk"), entry: .long))
    configuration.disks = [DiskConfiguration(path: path)]
    let run = try await GuestRunner.run(configuration, timeout: 120)
    #expect(
      run.passed(expecting: [
        "host bridge at 00.0", "virtio-blk found on bus 0", "capacity is 2048 sectors", "read sector 10 (host pattern)",
        "write 8 sectors", "read back what was written", "get-id", "read past the end: IOERR",
        "unknown type: UNSUPP", "five requests in one kick", "BAR 0 moved to 0xe0200000",
        "the old BAR address no longer decodes", "served at the new BAR address",
        "buffer outside guest memory: NEEDS_RESET",
        "descriptor loop: NEEDS_RESET", "head index past the table: NEEDS_RESET",
        "readable after writable: NEEDS_RESET",
        "indirect table without INDIRECT_DESC: NEEDS_RESET", "available index jumps past the ring: NEEDS_RESET",
        "served again after reset",
      ]), "\(run.output)")
    let file = [UInt8](try Data(contentsOf: URL(fileURLWithPath: path)))
    #expect(file[200 * 512..<208 * 512].allSatisfy { $0 == 0xA5 }, "the guest's write is in the file")
    #expect(file[199 * 512] == pattern[199 * 512] && file[208 * 512] == pattern[208 * 512], "and nothing beside it")
  }

  @Test("Port I/O (1/2/4 bytes), MMIO (1/2/4/8 bytes) and string I/O round-trip through a device")
  func ioWidths() async throws {
    let device = RecordingDevice()
    let run = try await GuestRunner.runProbe("io_widths") { machine in
      try machine.addDevice(device, port: 0x700, size: 0x40)
      try machine.addDevice(device, mmio: 0xD000_0000, size: 0x1000)
    }
    #expect(
      run.passed(expecting: [
        "port width 1", "port width 2", "port width 4", "mmio width 1", "mmio width 2", "mmio width 4",
        "mmio width 8", "rep outsb completes", "rep insw reads each word",
      ]), "\(run.output)")
    let writes = device.log.filter(\.isWrite).map { [$0.offset, UInt64($0.width), $0.value] }
    // Ports and MMIO write the same offsets; the host saw each value at its width.
    for expected: [UInt64] in [[0, 1, 0xA5], [8, 2, 0xBEEF], [16, 4, 0xDEAD_BEEF]] {
      #expect(writes.contains(expected), "missing port write \(expected)")
    }
    for expected: [UInt64] in [[0, 1, 0x5A], [8, 2, 0xCAFE], [16, 4, 0x1234_5678], [24, 8, 0x0123_4567_89AB_CDEF]] {
      #expect(writes.contains(expected), "missing MMIO write \(expected)")
    }
    // rep outsb: four single-byte writes at one port, in order.
    let stringWrites = device.log.filter { $0.isWrite && $0.offset == 32 }.map(\.value)
    #expect(stringWrites == [0x73, 0x6B, 0x76, 0x6D])
    #expect(run.statistics.count(of: 2) > 0 && run.statistics.count(of: 6) > 0)  // KVM_EXIT_IO, KVM_EXIT_MMIO
  }

  @Test("fw_cfg from a guest: signature, feature bits, the directory, etc/e820 by DMA, hostile descriptors refused")
  func firmwareConfig() async throws {
    let run = try await GuestRunner.runProbe("fw_cfg")
    #expect(
      run.passed(expecting: [
        "signature QEMU", "feature bits: ports and DMA", "DMA register reads QEMU CFG", "directory lists etc/e820",
        "DMA read of etc/e820 completes", "first e820 entry is RAM from 0", "DMA wrote no further than asked",
        "DMA to outside RAM: error bit", "DMA write: error bit", "DMA of 4 GiB: error bit",
        "still answers after hostile DMA",
      ]), "\(run.output)")
  }

  @Test("Unclaimed ports and MMIO read as all ones and are counted")
  func unclaimedAccesses() async throws {
    let run = try await GuestRunner.runProbe("unclaimed_access")
    #expect(run.passed(expecting: ["unclaimed mmio read width 8", "unclaimed mmio write is dropped"]), "\(run.output)")
    #expect(run.statistics.unclaimedPortAccesses >= 4)
    #expect(run.statistics.unclaimedMMIOAccesses >= 6)
  }

  @Test("INIT/SIPI through the in-kernel LAPIC wakes every vCPU", arguments: [2, 4])
  func smpBringUp(cpus: Int) async throws {
    let run = try await GuestRunner.runProbe("smp_bringup", cpus: cpus)
    #expect(run.passed(expecting: ["every vCPU reached CPL3", "every APIC id reported once"]), "\(run.output)")
    #expect(run.output.contains("online \(cpus) of \(cpus)"))
  }

  @Test("All vCPUs run at once, each doing port I/O on the same device", arguments: [2, 4])
  func smpConcurrentExits(cpus: Int) async throws {
    let counter = CountingDevice()
    let run = try await GuestRunner.runProbe("smp_concurrent", cpus: cpus) { machine in
      try machine.addDevice(counter, port: 0x770, size: 4)
    }
    #expect(run.passed(expecting: ["every vCPU online", "every write counted once"]), "\(run.output)")
    #expect(counter.total == UInt64(cpus * 2000))
  }

  @Test("A triple fault stops the machine with a report and status 2, on any vCPU count", arguments: [1, 2, 4])
  func tripleFault(cpus: Int) async throws {
    let run = try await GuestRunner.runProbe("triple_fault", cpus: cpus)
    guard case .guestFault(let fault) = run.exit else {
      Issue.record("expected a guest fault, got \(run.exit); output: \(run.output)")
      return
    }
    #expect(fault.kind == .tripleFault)
    #expect(fault.vcpu == 0)
    if fault.stateAvailable {
      #expect(fault.instructionBytes.starts(with: [0x0F, 0x0B]), "ud2 at RIP: \(fault.instructionBytes)")
      #expect(fault.description.contains("rip="))
    } else {
      // SVM hosts reset the vCPU on a shutdown intercept; the report must say so.
      #expect(fault.description.contains("not available"))
    }
    #expect(fault.description.contains("triple fault"))
    #expect(run.exit.exitStatus == 2)
    #expect(!run.output.contains("still running"))
  }

  @Test("An instruction KVM cannot emulate stops the machine with a report and status 2")
  func emulationFailure() async throws {
    let run = try await GuestRunner.runProbe("emulation_failure", cpus: 2)
    guard case .guestFault(let fault) = run.exit else {
      Issue.record("expected a guest fault, got \(run.exit); output: \(run.output)")
      return
    }
    #expect(fault.kind == .internalError(suberror: 1))
    #expect(fault.instructionPointer == 0xD400_0000)
    #expect(fault.description.contains("could not emulate"))
    #expect(run.exit.exitStatus == 2)
  }

  @Test("int3 and fwait at ring 0 work, completed by skvm where KVM cannot emulate them")
  func emulationGaps() async throws {
    let run = try await GuestRunner.runProbe("emulation_gaps")
    #expect(
      run.passed(expecting: [
        "int3 at CPL0 reaches the #BP handler once", "execution continues after int3", "fwait at CPL0 completes",
      ]), "\(run.output)")
    if HostKVMKind.detect() == .pvm {
      #expect(run.statistics.breakpointsInjected == 2)
      #expect(run.statistics.fwaitsSkipped == 1)
    } else {
      #expect(run.statistics.breakpointsInjected == 0, "VMX/SVM run int3 themselves")
    }
  }

  @Test("An exception at CPL3 is reported by the probe runtime")
  func userException() async throws {
    let run = try await GuestRunner.runProbe("user_exception")
    #expect(run.exit == .debugExit(value: 0x7F))
    #expect(run.output.contains("probe: exception 6"), "\(run.output)")
  }
}
