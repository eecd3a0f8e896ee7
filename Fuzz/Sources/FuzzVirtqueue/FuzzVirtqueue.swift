import FuzzSupport
import GuestMemory
import Virtio

/// libFuzzer entry: the input is the start of guest memory — descriptor table at 0, the
/// available ring at 0x200, the used ring at 0x400 — with a queue of 16. Taking requests
/// and completing them must end in chains or a `VirtqueueError`: never a crash or an
/// access outside guest memory.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzVirtqueue(_ data: UnsafePointer<UInt8>, _ size: Int) -> Int32 {
  guard size >= 2, let memory = FuzzMemory.shared else { return 0 }
  guard let whole = try? memory.buffer(at: 0, length: 0x10000) else { return 0 }
  whole.initializeMemory(as: UInt8.self, repeating: 0)
  whole.copyMemory(from: UnsafeRawBufferPointer(start: data, count: min(size, whole.count)))
  var queue = SplitVirtqueue(
    size: 16, descriptorTable: 0, availableRing: 0x200, usedRing: 0x400, eventIndex: data[0] & 1 != 0,
    indirectDescriptors: data[0] & 2 != 0)
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

/// 64 KiB of guest memory, made once.
enum FuzzMemory {
  nonisolated(unsafe) static let shared = try? GuestMemory(ranges: [(0, 0x10000)])
}

/// The executable's entry point as SwiftPM names it.
@_cdecl("FuzzVirtqueue_main")
public func fuzzVirtqueueMain(_ argc: Int32, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> Int32 {
  runFuzzer(argc, argv) { data, size in fuzzVirtqueue(data, size) }
}
