import CSystemCalls
import Checked
import Glibc

/// The VM state area of a qcow2 image (QEMU's layout): guest offsets past the disk, from the
/// first L1 entry the disk itself does not use. `savevm` writes a machine's state there before
/// taking the disk snapshot, so the snapshot's L1 table holds it; `loadvm` reads it back after
/// reverting to the snapshot. The guest never sees these offsets.
extension QCow2Image {
  /// Where the VM state area starts.
  public var vmStateOffset: UInt64 {
    let header = self.header
    return QCow2Header.l1EntriesNeeded(size: header.size, clusterBits: header.clusterBits)
      << (2 * UInt64(header.clusterBits) - 3)
  }

  /// Writes `bytes` at `offset` in the VM state area, allocating clusters (and growing the L1
  /// table) as needed. Pages of zeros need not be written: the area reads as zeros where
  /// nothing was.
  public func writeVMState(_ bytes: UnsafeRawBufferPointer, at offset: UInt64) throws(DiskImageError) {
    guard !isReadOnly else { throw .invalid(path: path, reason: "the image is open read-only") }
    let start = vmStateOffset
    guard let position = start.checkedAdding(offset), position.checkedAdding(UInt64(bytes.count)) != nil else {
      throw .invalid(path: path, reason: "VM state offset \(offset) is out of range")
    }
    try withMetadata { state throws(DiskImageError) in
      let header = state.header
      let clusterSize = header.clusterSize
      let last = position + UInt64(max(bytes.count, 1)) - 1
      let needed = Int(last >> (2 * UInt64(header.clusterBits) - 3)) + 1
      if needed > state.l1.count { try growL1(to: needed, in: &state) }
      var done = 0
      while done < bytes.count {
        let at = position + UInt64(done)
        let inCluster = Int(at & (clusterSize - 1))
        let count = min(bytes.count - done, Int(clusterSize) - inCluster)
        // Whole clusters nobody wrote before go out as one allocation and one write per L2 table.
        if inCluster == 0 && count == Int(clusterSize) {
          let written = try writeFreshRun(UnsafeRawBufferPointer(rebasing: bytes[done...]), at: at, in: &state)
          if written > 0 {
            done += written
            continue
          }
        }
        try writeWithinCluster(
          UnsafeRawBufferPointer(rebasing: bytes[done..<done + count]), at: at, inCluster: inCluster, in: &state)
        done += count
      }
    }
  }

  /// Reads `count` bytes at `offset` in the VM state area.
  public func readVMState(count: Int, at offset: UInt64) throws(DiskImageError) -> [UInt8] {
    let start = vmStateOffset
    guard let position = start.checkedAdding(offset), position.checkedAdding(UInt64(count)) != nil else {
      throw .invalid(path: path, reason: "VM state offset \(offset) is out of range")
    }
    var bytes = [UInt8](repeating: 0, count: count)
    var failure: DiskImageError?
    bytes.withUnsafeMutableBytes { buffer in
      do throws(DiskImageError) {
        let clusterSize = header.clusterSize
        var done = 0
        while done < buffer.count {
          let at = position + UInt64(done)
          let inCluster = Int(at & (clusterSize - 1))
          let piece = min(buffer.count - done, Int(clusterSize) - inCluster)
          let mapping = try self.mapping(of: at)
          if mapping != .unallocated {
            try read(
              UnsafeMutableRawBufferPointer(rebasing: buffer[done..<done + piece]), of: mapping, at: at,
              inCluster: inCluster)
          }
          done += piece
        }
      } catch { failure = error }
    }
    if let failure { throw failure }
    return bytes
  }

  /// Copies `[0, length)` of the VM state area into `fd` at the same offsets: data clusters
  /// file to file in the kernel, compressed ones through memory, unallocated ones not at all
  /// (`fd` must be `length` long already, so they read as zeros).
  public func copyVMState(length: UInt64, to fd: Int32) throws(DiskImageError) {
    let start = vmStateOffset
    let clusterSize = header.clusterSize
    var offset: UInt64 = 0
    while offset < length {
      let count = min(clusterSize, length - offset)
      let mapping = try self.mapping(of: start + offset)
      switch mapping {
      case .unallocated, .zero:
        break
      case .data(let host, _):
        var input = off_t(host)
        var output = off_t(offset)
        var remaining = Int(count)
        while remaining > 0 {
          let copied = csys_copy_file_range(file.fd, &input, fd, &output, remaining)
          if copied < 0 && errno == EINTR { continue }
          guard copied > 0 else {
            let bytes = try readVMState(count: Int(count), at: offset)
            try Self.write(bytes, to: fd, at: offset, path: path)
            break
          }
          remaining -= copied
        }
      case .compressed:
        try Self.write(try readVMState(count: Int(count), at: offset), to: fd, at: offset, path: path)
      }
      offset += count
    }
  }

  private static func write(_ bytes: [UInt8], to fd: Int32, at offset: UInt64, path: String) throws(DiskImageError) {
    var done = 0
    while done < bytes.count {
      let remaining = bytes.count - done
      let written = bytes.withUnsafeBytes { pwrite(fd, $0.baseAddress! + done, remaining, off_t(offset) + off_t(done)) }
      if written < 0 && errno == EINTR { continue }
      guard written > 0 else { throw .io(path: path, operation: "copy of the VM state", errno: errno) }
      done += written
    }
  }

  /// Whether the cluster holding `offset` in the VM state area has data (a reader of a large
  /// area skips the rest: it reads as zeros).
  public func vmStateIsAllocated(at offset: UInt64) throws(DiskImageError) -> Bool {
    guard let position = vmStateOffset.checkedAdding(offset) else { return false }
    return try mapping(of: position) != .unallocated
  }

  /// Unmaps `[0, length)` of the VM state area from the active layer (a snapshot that holds
  /// the state keeps its own references to those clusters).
  public func discardVMState(length: UInt64) throws(DiskImageError) {
    guard length > 0 else { return }
    try withMetadata { state throws(DiskImageError) in
      let start =
        QCow2Header.l1EntriesNeeded(size: state.header.size, clusterBits: state.header.clusterBits)
        << (2 * UInt64(state.header.clusterBits) - 3)
      guard let end = start.checkedAdding(length) else { return }
      try unmapClusters(start..<end, in: &state)
      try file.orderingPoint()
    }
  }
}

/// Where a piece of the VM state area lies in the image file: `length` bytes at `offset` in
/// the area are the file's bytes at `hostOffset`, or zeros where it is nil.
public struct VMStateExtent: Sendable, Equatable {
  public let offset: UInt64
  public let length: UInt64
  public let hostOffset: UInt64?
}

extension QCow2Image {
  /// The image file's descriptor, for mapping extents `mapVMState` returned (read it only).
  public var fileDescriptor: Int32 { file.fd }

  /// The file extents behind `range` of the VM state area, for mapping it into memory
  /// directly, and pins their clusters: while this image stays open they are never
  /// allocated again, even once nothing references them (a `delvm`), so the mapping keeps
  /// reading what the snapshot held. Nil where the area cannot be mapped page by page:
  /// clusters smaller than `pageSize`, or compressed ones.
  public func mapVMState(_ range: Range<UInt64>, pageSize: UInt64) throws(DiskImageError) -> [VMStateExtent]? {
    guard let start = vmStateOffset.checkedAdding(range.lowerBound), start.checkedAdding(UInt64(range.count)) != nil
    else { throw .invalid(path: path, reason: "VM state range \(range) is out of range") }
    let clusterSize = header.clusterSize
    guard clusterSize >= pageSize, range.lowerBound % clusterSize == 0 else { return nil }
    var extents: [VMStateExtent] = []
    var offset = range.lowerBound
    while offset < range.upperBound {
      let length = min(clusterSize, range.upperBound - offset)
      let host: UInt64?
      switch try mapping(of: vmStateOffset + offset) {
      case .unallocated, .zero: host = nil
      case .data(let at, _): host = at
      case .compressed: return nil
      }
      if let last = extents.last, last.offset + last.length == offset,
        (last.hostOffset == nil && host == nil)
          || (host != nil && last.hostOffset.map { $0 + last.length } == host)
      {
        extents[extents.count - 1] = VMStateExtent(
          offset: last.offset, length: last.length + length, hostOffset: last.hostOffset)
      } else {
        extents.append(VMStateExtent(offset: offset, length: length, hostOffset: host))
      }
      offset += length
    }
    let clusterBits = UInt64(header.clusterBits)
    try withMetadata { state throws(DiskImageError) in
      for extent in extents {
        guard let host = extent.hostOffset else { continue }
        state.refcounts?.pin((host >> clusterBits)..<((host + extent.length + clusterSize - 1) >> clusterBits))
      }
    }
    return extents
  }
}
