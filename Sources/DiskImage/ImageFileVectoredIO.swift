import Glibc
import Synchronization

/// Scattered reads and gathered writes (a guest request's buffers) in as few `preadv` and
/// `pwritev` calls as the kernel allows: one per 1,024 buffers, resumed after a short transfer.
extension ImageFile {
  /// The most buffers one call takes (Linux's IOV_MAX).
  static let vectorLimit = 1024

  /// Fills `buffers` in order from the file's bytes at `offset`; zeros past its end.
  func read(into buffers: [UnsafeMutableRawBufferPointer], at offset: UInt64) throws(DiskImageError) {
    try transfer(buffers.count, at: offset, writing: false) { (buffers[$0].baseAddress, buffers[$0].count) }
  }

  /// Writes `buffers` in order at `offset`.
  func write(_ buffers: [UnsafeRawBufferPointer], at offset: UInt64) throws(DiskImageError) {
    try transfer(buffers.count, at: offset, writing: true) {
      (UnsafeMutableRawPointer(mutating: buffers[$0].baseAddress), buffers[$0].count)
    }
    unflushed.store(true, ordering: .releasing)
  }

  /// Moves `count` buffers (`buffer(i)` gives each one's start and length) at `offset`.
  private func transfer(
    _ count: Int, at offset: UInt64, writing: Bool, _ buffer: (Int) -> (UnsafeMutableRawPointer?, Int)
  ) throws(DiskImageError) {
    var total = 0
    var aligned = directFD >= 0
    for index in 0..<count {
      let (base, length) = buffer(index)
      total += length
      aligned = aligned && Self.isDirectAligned(base, length, offset)
    }
    guard offset <= UInt64(Int64.max) - UInt64(total) else {
      throw .invalid(path: path, reason: "offset \(offset) is beyond any file")
    }
    let descriptor = aligned ? directFD : fd
    var failure: DiskImageError?
    withUnsafeTemporaryAllocation(of: iovec.self, capacity: max(1, min(count, Self.vectorLimit))) { vectors in
      var first = 0  // the first buffer not yet done
      var skip = 0  // bytes of it that are
      var position = offset
      while true {
        while first < count && buffer(first).1 == skip {
          first += 1
          skip = 0
        }
        guard first < count else { return }
        var used = 0
        while used < vectors.count && first + used < count {
          let (base, length) = buffer(first + used)
          let start = used == 0 ? skip : 0
          vectors[used] = iovec(iov_base: base.map { $0 + start }, iov_len: length - start)
          used += 1
        }
        let moved =
          writing
          ? pwritev(descriptor, vectors.baseAddress, Int32(used), off_t(position))
          : preadv(descriptor, vectors.baseAddress, Int32(used), off_t(position))
        if moved < 0 {
          if errno == EINTR { continue }
          failure = .io(path: path, operation: "\(writing ? "write" : "read") at \(position)", errno: errno)
          return
        }
        if moved == 0 {
          if writing {
            failure = .io(path: path, operation: "write at \(position)", errno: EIO)
            return
          }
          // Past the end of the file: the rest reads as zeros.
          for index in first..<count {
            let (base, length) = buffer(index)
            let start = index == first ? skip : 0
            if let base { (base + start).initializeMemory(as: UInt8.self, repeating: 0, count: length - start) }
          }
          return
        }
        position += UInt64(moved)
        var left = moved
        while left > 0 && first < count {
          let remaining = buffer(first).1 - skip
          if left >= remaining {
            left -= remaining
            first += 1
            skip = 0
          } else {
            skip += left
            left = 0
          }
        }
      }
    }
    if let failure { throw failure }
  }
}
