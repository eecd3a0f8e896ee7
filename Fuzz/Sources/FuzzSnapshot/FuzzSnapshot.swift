import FuzzSupport
import Glibc
import SwiftKVM
import Virtio

/// libFuzzer entry for the snapshot decoder. The first byte picks what the rest is: 0, a whole
/// snapshot file (header, sections, RAM); 1, the machine record (configuration, vCPUs, in-kernel
/// devices) of a well-formed file with 64 KiB of RAM; 2, its devices section, beside a minimal
/// valid record; 3, a live-migration stream as a destination receives it (through a socket
/// pair; what it decodes is then restored as a snapshot would be). The file is opened and checked, its configuration read, and every device
/// state restored into a registry of the devices skvm builds (platform devices, the PCI host
/// bridge and ports, a virtio-blk function): each must end in a restored machine or a
/// `VirtualMachineError`, never a trap.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzSnapshot(_ data: UnsafePointer<UInt8>, _ size: Int) -> Int32 {
  guard size > 0 else { return 0 }
  let path = "/dev/shm/skvm-fuzz-\(getpid()).snap"
  let body = Array(UnsafeBufferPointer(start: data + 1, count: size - 1))
  if data[0] == 3 {
    fuzzMigrationStream(body)
    return 0
  }
  let file: [UInt8]
  switch data[0] {
  case 0: file = body
  case 1: file = wellFormedFile(record: body, devices: Array("{}".utf8))
  default: file = wellFormedFile(record: minimalRecord, devices: body)
  }
  let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0o600)
  guard fd >= 0 else { return 0 }
  _ = file.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
  close(fd)
  defer { unlink(path) }
  guard let snapshot = try? SnapshotFile(path: path) else { return 0 }
  _ = try? snapshot.savedConfiguration()
  guard let registry = Machine.shared?.fresh() else { return 0 }
  _ = try? snapshot.restoreDevices(into: registry)
  return 0
}

/// A record that decodes (its vCPU and kernel states are only checked when applied to KVM).
private let minimalRecord = Array(
  ("{\"formatVersion\":1,\"configuration\":{\"timesExits\":false,\"entropy\":false,\"disks\":[],"
    + "\"debugExitPort\":244,\"memorySize\":65536,\"boot\":{\"flatImage\":{\"bytes\":[244],\"entry\":\"real\"}},"
    + "\"cpuCount\":1,\"name\":\"fuzz\",\"consoleDevice\":\"serial\"},\"vcpus\":[],\"kernel\":{\"clockFlags\":0,"
    + "\"clockRealtime\":0,\"interruptControllers\":[],\"savedAtNanoseconds\":0,\"clock\":0,\"pit\":\"\"}}").utf8)

/// A snapshot file around `record` and `devices`: the header, the sections at 4096, 64 KiB of RAM.
private func wellFormedFile(record: [UInt8], devices: [UInt8]) -> [UInt8] {
  var header = [UInt8](repeating: 0, count: 4096)
  func put<T: FixedWidthInteger>(_ value: T, _ at: Int) {
    withUnsafeBytes(of: value.littleEndian) { header.replaceSubrange(at..<at + $0.count, with: $0) }
  }
  let stateEnd = 4096 + record.count + devices.count
  let ramOffset = UInt64((stateEnd + 4095) & ~4095)
  header.replaceSubrange(0..<8, with: Array("SKVMSNAP".utf8))
  put(UInt32(1), 8)
  put(UInt32(1), 12)
  put(UInt64(4096), 16)
  put(UInt64(record.count), 24)
  put(crc(record), 32)
  put(crc(devices), 36)
  put(ramOffset, 40)
  put(UInt64(65536), 48)
  put(UInt64(4096 + record.count), 56)
  put(UInt64(devices.count), 64)
  put(UInt64(0), 72)
  put(UInt64(65536), 80)
  put(ramOffset, 88)
  return header + record + devices + [UInt8](repeating: 0, count: Int(ramOffset) - stateEnd + 65536)
}

/// zlib's CRC-32, as the snapshot file uses.
private func crc(_ bytes: [UInt8]) -> UInt32 {
  var value: UInt32 = 0xFFFF_FFFF
  for byte in bytes {
    value ^= UInt32(byte)
    for _ in 0..<8 { value = value & 1 != 0 ? (value >> 1) ^ 0xEDB8_8320 : value >> 1 }
  }
  return ~value
}

/// The devices a machine with one disk registers, built without KVM.
private final class Machine: @unchecked Sendable {
  static let shared = Machine()
  let memory: GuestMemory

  init?() {
    guard let memory = try? GuestMemory(ranges: [(0, 1 << 20)], backing: .anonymous) else { return nil }
    self.memory = memory
  }

  /// What the devices ask to stop the machine through (one per run: weak references to a
  /// never-freed object would look like leaks).
  private final class Control: MachineControl {
    func requestStop(_ request: StopRequest) {}
  }

  func fresh() -> DeviceRegistry? {
    let registry = DeviceRegistry()
    let control = Control()
    let bus = PCIBus()
    let transport = VirtioPCITransport(
      device: VirtioBlock(backend: NullDisk(size: 65536), memory: memory), memory: memory, sink: NoInterrupts(),
      classCode: 0x01_8000)
    do {
      try registry.register(SerialPort(output: DiscardedConsoleOutput()), id: "serial0", kind: "uart")
      try registry.register(I8042Controller(control: control), id: "i8042", kind: "i8042")
      try registry.register(ResetControlRegister(control: control), id: "reset-control", kind: "reset")
      try registry.register(PostCodePort(), id: "post-code", kind: "post")
      try registry.register(CMOSClock(), id: "rtc", kind: "rtc")
      try registry.register(PanicNotifier(control: control), id: "pvpanic", kind: "pvpanic")
      try registry.register(
        ACPIPowerManagement(control: control, interrupt: DisconnectedInterruptLine()), id: "acpi-pm", kind: "pm")
      try registry.register(DebugExitPort(control: control), id: "debug-exit", kind: "debug-exit")
      try registry.register(PCIHostBridge(), id: "pci-host", kind: "host bridge")
      try registry.register(PCIConfigPorts(bus: bus), id: "pci-config", kind: "config ports")
      try registry.register(transport, id: "virtio-blk0", kind: "virtio-blk")
    } catch {
      return nil
    }
    return registry
  }
}

private struct NoInterrupts: VirtioInterruptSink {
  func deliverMessage(vector: Int, address: UInt64, data: UInt32) {}
  func setLine(_ asserted: Bool) {}
}

/// The executable's entry point as SwiftPM names it.
@_cdecl("FuzzSnapshot_main")
public func fuzzSnapshotMain(_ argc: Int32, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> Int32 {
  runFuzzer(argc, argv) { data, size in fuzzSnapshot(data, size) }
}

/// Feeds `stream` to a migration destination through a socket pair (the sending end closed
/// after it, so the reader meets the end instead of waiting).
private func fuzzMigrationStream(_ stream: [UInt8]) {
  var ends: [Int32] = [0, 0]
  guard socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0, &ends) == 0 else { return }
  var size = Int32(1 << 20)
  _ = setsockopt(ends[1], SOL_SOCKET, SO_SNDBUF, &size, socklen_t(MemoryLayout<Int32>.size))
  _ = setsockopt(ends[0], SOL_SOCKET, SO_RCVBUF, &size, socklen_t(MemoryLayout<Int32>.size))
  _ = stream.withUnsafeBytes { send(ends[1], $0.baseAddress, $0.count, Int32(MSG_DONTWAIT)) }
  shutdown(ends[1], Int32(SHUT_WR))
  defer { close(ends[1]) }
  guard let snapshot = try? IncomingMigration.receive(fromSocket: ends[0], peer: "the fuzzer") else { return }
  _ = try? snapshot.savedConfiguration()
  guard let registry = Machine.shared?.fresh() else { return }
  _ = try? snapshot.restoreDevices(into: registry)
}
