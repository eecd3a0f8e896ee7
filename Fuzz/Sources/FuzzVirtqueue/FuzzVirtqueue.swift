import Devices
import DiskImage
import FuzzSupport
import GuestMemory
import Virtio

/// libFuzzer entry: the input is the start of guest memory — descriptor table at 0, the
/// available ring at 0x200, the used ring at 0x400 — with a queue of 16. Taking requests
/// and completing them must end in chains or a `VirtqueueError`: never a crash or an
/// access outside guest memory. With bit 2 of the first byte set, the same rings feed a
/// whole virtio-blk device (headers, request types, sectors, discard segments all from the
/// input) over a 64 KiB in-memory disk; with bit 3, a virtio-console (transmit and receive).
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
