extension QCow2Image {
  /// Changes the virtual size. Growing enlarges the L1 table if needed (a new table,
  /// written before the header points to it); shrinking frees every cluster past the new
  /// end first. Images with internal snapshots keep their size.
  public func resize(to newSize: UInt64) throws(DiskImageError) {
    try withMetadata { state throws(DiskImageError) in
      guard state.header.snapshotCount == 0 else {
        throw .unsupported(path: path, feature: "resizing an image with internal snapshots")
      }
      guard newSize <= (1 << 61) else { throw .invalid(path: path, reason: "size \(newSize) is larger than 2^61") }
      let header = state.header
      if newSize < header.size { try discardClusters(from: newSize, in: &state) }
      let needed = QCow2Header.l1EntriesNeeded(size: newSize, clusterBits: header.clusterBits)
      if needed > UInt64(header.l1Size) { try growL1(to: Int(needed), in: &state) }
      try file.write(BigEndian.bytes(newSize), at: 24)
      try file.orderingPoint()
      state.header.size = newSize
    }
  }

  /// Unmaps every cluster that starts at or after `size` (rounded up to a cluster).
  private func discardClusters(from size: UInt64, in state: inout State) throws(DiskImageError) {
    guard size < state.header.size else { return }
    try unmapClusters(size..<state.header.size, in: &state)
  }

  func growL1(to entries: Int, in state: inout State) throws(DiskImageError) {
    guard UInt64(entries) * 8 <= QCow2Header.maximumL1Bytes else {
      throw .invalid(path: path, reason: "the L1 table for this size would exceed 32 MiB")
    }
    guard var refcounts = state.refcounts else { throw .invalid(path: path, reason: "the image is open read-only") }
    let clusterSize = state.header.clusterSize
    let oldOffset = state.header.l1TableOffset
    let oldBytes = UInt64(state.l1.count) * 8
    let clusters = (UInt64(entries) * 8 + clusterSize - 1) / clusterSize
    let offset = try refcounts.allocate(Int(clusters))
    state.refcounts = refcounts
    let table = state.l1 + [UInt64](repeating: 0, count: entries - state.l1.count)
    try file.orderingPoint()
    try file.write(table.flatMap(BigEndian.bytes), at: offset)
    try file.orderingPoint()
    try file.write(BigEndian.bytes(UInt32(entries)), at: 36)
    try file.write(BigEndian.bytes(offset), at: 40)
    try file.orderingPoint()
    state.l1 = table
    state.header.l1Size = UInt32(entries)
    state.header.l1TableOffset = offset
    if oldBytes > 0 {
      try refcounts.adjust(offset: oldOffset, length: oldBytes, by: -1)
      state.refcounts = refcounts
    }
  }
}
