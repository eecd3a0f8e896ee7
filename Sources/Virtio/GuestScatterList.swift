import DiskImage
import GuestMemory

/// A descriptor chain's readable or writable buffers seen as one run of bytes: a device
/// reads its request, or writes its answer, at an offset into the run without caring where
/// one guest buffer ends and the next begins. Every access stays inside the buffers and
/// inside guest memory; one that does not fit fails (nil, false) and touches nothing beyond.
struct GuestScatterList {
  let buffers: ArraySlice<DescriptorChain.Buffer>
  let memory: GuestMemory

  init(_ buffers: ArraySlice<DescriptorChain.Buffer>, memory: GuestMemory) {
    self.buffers = buffers
    self.memory = memory
  }

  /// Total bytes.
  var length: Int { buffers.reduce(0) { $0 + Int($1.length) } }

  /// The pieces of guest memory that `count` bytes from `offset` occupy, in order; nil when
  /// they run past the end.
  private func pieces(at offset: Int, count: Int) -> [(address: UInt64, length: Int)]? {
    guard offset >= 0, count >= 0 else { return nil }
    var skip = offset
    var left = count
    var result: [(UInt64, Int)] = []
    for buffer in buffers where left > 0 {
      let size = Int(buffer.length)
      if skip >= size {
        skip -= size
        continue
      }
      let take = min(size - skip, left)
      result.append((buffer.address + UInt64(skip), take))
      skip = 0
      left -= take
    }
    return left == 0 ? result : nil
  }

  /// `count` bytes from `offset`.
  func bytes(at offset: Int, count: Int) -> [UInt8]? {
    guard let pieces = pieces(at: offset, count: count) else { return nil }
    var result: [UInt8] = []
    result.reserveCapacity(count)
    for piece in pieces {
      guard let bytes = try? memory.bytes(at: piece.address, length: piece.length) else { return nil }
      result += bytes
    }
    return result
  }

  /// Writes `bytes` at `offset`.
  func write(_ bytes: [UInt8], at offset: Int) -> Bool {
    guard let pieces = pieces(at: offset, count: bytes.count) else { return false }
    var from = 0
    for piece in pieces {
      guard (try? memory.write(Array(bytes[from..<from + piece.length]), to: piece.address)) != nil else {
        return false
      }
      from += piece.length
    }
    return true
  }

  /// Reads `count` bytes of `backend` from byte `source` straight into the buffers at `offset`.
  func read(from backend: any BlockBackend, offset source: UInt64, count: Int, at offset: Int) -> Bool {
    guard let pieces = pieces(at: offset, count: count) else { return false }
    var position = source
    for piece in pieces {
      do {
        try backend.read(into: try memory.bufferForWriting(at: piece.address, length: piece.length), at: position)
        memory.finishedWriting(at: piece.address, length: piece.length)
      } catch {
        return false
      }
      position += UInt64(piece.length)
    }
    return true
  }
}
