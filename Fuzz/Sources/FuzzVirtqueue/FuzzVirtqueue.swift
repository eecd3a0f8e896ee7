import Devices
import DiskImage
import FuzzSupport
import Glibc
import GuestMemory
import Network
import Virtio

/// libFuzzer entry: the input is the start of guest memory — descriptor table at 0, the
/// available ring at 0x200, the used ring at 0x400 — with a queue of 16. Taking requests
/// and completing them must end in chains or a `VirtqueueError`: never a crash or an
/// access outside guest memory. With bit 2 of the first byte set, the same rings feed a
/// whole virtio-blk device (headers, request types, sectors, discard segments all from the
/// input) over a 64 KiB in-memory disk; with bit 3, a virtio-console (transmit and receive);
/// with bit 4, a virtio-net device (transmit, control commands, and frames from the back end
/// carved from the input's tail, with or without a virtio-net header, mergeable or not); with
/// bit 6, fw_cfg: the input's bytes drive its ports (selector, data, DMA address halves) and its
/// DMA descriptors are whatever the input put in guest memory; with bit 7 alone, virtio-scsi's
/// CD-ROM (the rings as its control and request queues: LUNs, CDBs and buffers from the input).
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzVirtqueue(_ data: UnsafePointer<UInt8>, _ size: Int) -> Int32 {
  guard size >= 2, let memory = FuzzMemory.shared else { return 0 }
  guard let whole = try? memory.buffer(at: 0, length: 0x10000) else { return 0 }
  whole.initializeMemory(as: UInt8.self, repeating: 0)
  whole.copyMemory(from: UnsafeRawBufferPointer(start: data, count: min(size, whole.count)))
  var queue = SplitVirtqueue(
    size: 16, descriptorTable: 0, availableRing: 0x200, usedRing: 0x400, eventIndex: data[0] & 1 != 0,
    indirectDescriptors: data[0] & 2 != 0)
  if data[0] & 4 != 0 {
    let device = VirtioBlock(backend: MemoryDisk(), memory: memory, serial: "fuzz")
    device.activate(queues: [queue], features: 0)
    _ = device.notify(queue: 0)
    return 0
  }
  if data[0] & 0x10 != 0 {
    fuzzNetwork(data, size, queue: queue, memory: memory)
    return 0
  }
  if data[0] & 0x40 != 0 {
    fuzzFirmwareConfig(data, size, memory: memory)
    return 0
  }
  if data[0] & 0x80 != 0 {
    let drive = VirtioSCSI(backend: MemoryDisk(), memory: memory)
    drive.writeConfig(20, width: 4, value: UInt64(data[1]))  // sense_size, as a driver may set it
    drive.activate(queues: [queue, .disabled, queue], features: 0)
    _ = drive.notify(queue: 0)
    _ = drive.notify(queue: 1)
    _ = drive.notify(queue: 2)
    return 0
  }
  if data[0] & 8 != 0 {
    // virtio-console: the same rings as its transmit queue, and as its receive queue for host input.
    let console = VirtioConsole(memory: memory, output: DiscardedOutput())
    console.activate(queues: [queue, queue], features: 0)
    _ = console.notify(queue: 1)
    _ = console.receive(Array(repeating: 0x41, count: 300)[...])
    return 0
  }
  for _ in 0..<32 {
    do {
      guard let chain = try queue.next(in: memory) else { break }
      try queue.complete(chain.head, written: UInt32(clamping: chain.writableLength), in: memory)
      _ = try queue.shouldNotify(in: memory)
    } catch {
      break
    }
  }
  return 0
}

/// fw_cfg driven by the input: five bytes per access (which register, then a 32-bit value).
private func fuzzFirmwareConfig(_ data: UnsafePointer<UInt8>, _ size: Int, memory: GuestMemory) {
  var contents = FirmwareConfigContents()
  try? contents.addFile("etc/e820", Array(0..<40))
  try? contents.addFile("bootorder", Array("/pci@i0cf8/*@1\n".utf8))
  let device = FirmwareConfig(contents: contents, memory: memory)
  var index = 1
  while index + 5 <= min(size, 512) {
    let value = (1...4).reduce(UInt64(0)) { $0 | UInt64(data[index + $1]) << UInt64(8 * ($1 - 1)) }
    switch data[index] % 5 {
    case 0: device.write(offset: 0, width: 2, value: value & 0xFFFF)
    case 1: _ = device.read(offset: 1, width: Int(value % 8) + 1)
    case 2: device.write(offset: 4, width: 4, value: value)
    case 3: device.write(offset: 8, width: 4, value: value)
    default: _ = device.read(offset: 4 + value % 8, width: 4)
    }
    index += 5
  }
}

/// virtio-net over the fuzzed rings: every queue is the same ring (hostile to each path).
private func fuzzNetwork(_ data: UnsafePointer<UInt8>, _ size: Int, queue: SplitVirtqueue, memory: GuestMemory) {
  let backend = FuzzBackend(headerLength: data[0] & 0x20 != 0 ? 12 : 0)
  let device = VirtioNet(backend: backend, macAddress: MACAddress("52:54:00:12:34:56")!, memory: memory)
  let features =
    (data[0] & 0x40 != 0 ? VirtioNetFeature.mergeableReceiveBuffers : 0) | VirtioNetFeature.controlQueue
    | (data[0] & 0x80 != 0 ? VirtioNetFeature.tapOffloads : 0)
  device.activate(queues: [queue, queue, queue], features: features)
  _ = device.notify(queue: 2)
  _ = device.notify(queue: 1)
  // Frames "from the host": lengths from the input, contents the input itself.
  let input = UnsafeRawBufferPointer(start: data, count: size)
  var offset = 1
  for _ in 0..<4 where offset + 2 <= size {
    let length = Int(data[offset]) << 8 | Int(data[offset + 1])
    offset += 2
    let frame = UnsafeRawBufferPointer(rebasing: input[offset..<min(size, offset + length)])
    _ = device.receive(frame)
    offset += frame.count
  }
  _ = device.receive(UnsafeRawBufferPointer(start: FuzzBackend.huge.baseAddress, count: FuzzBackend.huge.count))
  device.setLink(up: false)
  _ = device.notify(queue: 1)
  device.reset()
}

/// A back end that swallows what it is sent.
final class FuzzBackend: NetworkBackend, @unchecked Sendable {
  let description = "fuzz"
  let headerLength: Int
  let offloadFeatures = VirtioNetFeature.tapOffloads
  /// A frame longer than any the device accepts.
  nonisolated(unsafe) static let huge = UnsafeMutableRawBufferPointer.allocate(byteCount: 70_000, alignment: 8)
  init(headerLength: Int) { self.headerLength = headerLength }
  func setNegotiatedFeatures(_ features: UInt64) {}
  func attach(deliver: @escaping @Sendable (UnsafeRawBufferPointer) -> Bool, wake: @escaping @Sendable () -> Void) {}
  func send(_ parts: UnsafeBufferPointer<iovec>) -> Bool {
    var sum = 0
    for part in parts {
      guard let base = part.iov_base else { continue }
      sum &+= Int(base.load(as: UInt8.self)) &+ part.iov_len
    }
    return sum != 1
  }
  func preparePoll(_ descriptors: inout [pollfd]) -> Int32 { -1 }
  func service(_ descriptors: ArraySlice<pollfd>) {}
  func close() {}
}

/// Console output nobody reads.
struct DiscardedOutput: ConsoleOutput {
  func write(_ bytes: UnsafeRawBufferPointer) {}
}

/// A 64 KiB disk in memory, so the fuzzer measures the device, not the file system.
final class MemoryDisk: BlockBackend, @unchecked Sendable {
  private var bytes = [UInt8](repeating: 0, count: 0x10000)
  var size: UInt64 { UInt64(bytes.count) }
  var isReadOnly: Bool { false }

  func read(into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64) throws(DiskImageError) {
    let range = try checked(offset, buffer.count)
    bytes.withUnsafeBytes { buffer.copyMemory(from: UnsafeRawBufferPointer(rebasing: $0[range])) }
  }

  func write(_ data: UnsafeRawBufferPointer, at offset: UInt64) throws(DiskImageError) {
    let range = try checked(offset, data.count)
    bytes.replaceSubrange(range, with: data)
  }

  func flush() throws(DiskImageError) {}

  func writeZeroes(at offset: UInt64, length: UInt64) throws(DiskImageError) {
    let range = try checked(offset, Int(clamping: length))
    bytes.replaceSubrange(range, with: repeatElement(0, count: range.count))
  }

  func discard(at offset: UInt64, length: UInt64) throws(DiskImageError) { try writeZeroes(at: offset, length: length) }
  func close() {}

  private func checked(_ offset: UInt64, _ count: Int) throws(DiskImageError) -> Range<Int> {
    guard offset <= size, UInt64(count) <= size - offset else {
      throw .outOfRange(offset: offset, length: count, size: size)
    }
    return Int(offset)..<Int(offset) + count
  }
}

/// 64 KiB of guest memory, made once.
enum FuzzMemory {
  static let shared = try? GuestMemory(ranges: [(0, 0x10000)])
}

/// The executable's entry point as SwiftPM names it.
@_cdecl("FuzzVirtqueue_main")
public func fuzzVirtqueueMain(_ argc: Int32, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> Int32 {
  runFuzzer(argc, argv) { data, size in fuzzVirtqueue(data, size) }
}
