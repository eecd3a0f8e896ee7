import CSystemCalls
import Glibc

/// qemu-img's `preallocation=` modes for new qcow2 images.
public enum QCow2Preallocation: String, Sendable, CaseIterable {
  /// Nothing allocated up front.
  case off
  /// Every L2 table and data cluster allocated; the file stays sparse.
  case metadata
  /// As metadata, with the data clusters' space reserved by fallocate.
  case falloc
  /// As metadata, with the data clusters written with zeros.
  case full
}

extension QCow2Image {
  /// Allocates every cluster of the image up front (see `QCow2Preallocation`).
  public func preallocate(_ mode: QCow2Preallocation) throws(DiskImageError) {
    guard mode != .off else { return }
    try withMetadata { state throws(DiskImageError) in
      let header = state.header
      let clusterSize = header.clusterSize
      let clusterBits = UInt64(header.clusterBits)
      let clusters = (header.size + clusterSize - 1) >> clusterBits
      var cluster: UInt64 = 0
      while cluster < clusters {
        let l1Index = Int(cluster >> (clusterBits - 3))
        let firstSlot = Int(cluster & (header.l2Entries - 1))
        let count = Int(min(header.l2Entries - UInt64(firstSlot), clusters - cluster))
        let l2Offset = try ownedL2Table(l1Index, in: &state)
        var table = try Self.l2Table(at: l2Offset, in: &state, file)
        guard var refcounts = state.refcounts else { throw .invalid(path: path, reason: "the image is open read-only") }
        let host = try refcounts.allocate(count)
        state.refcounts = refcounts
        let end = host + UInt64(count) * clusterSize
        switch mode {
        case .full:
          let zeros = [UInt8](repeating: 0, count: Int(clusterSize))
          for index in 0..<UInt64(count) { try file.write(zeros, at: host + index * clusterSize) }
        case .falloc:
          if !file.allocate(mode: 0, at: host, length: end - host) {
            try file.truncate(to: max(file.length, end))
          }
        case .metadata, .off:
          try file.truncate(to: max(file.length, end))
        }
        try file.orderingPoint()
        for index in 0..<count { table[firstSlot + index] = (host + UInt64(index) * clusterSize) | Self.copiedFlag }
        try file.write(table.flatMap(BigEndian.bytes), at: l2Offset)
        state.l2Cache.insert(table, at: l2Offset)
        cluster += UInt64(count)
      }
      try file.flush()
    }
  }
}
