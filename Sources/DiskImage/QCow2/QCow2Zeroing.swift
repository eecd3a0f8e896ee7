extension QCow2Image {
  /// Makes `[offset, offset + length)` read as zeros. Whole clusters become zero clusters
  /// (version 3) or unallocated (version 2 with nothing behind them) and give their space
  /// back; the partial clusters at either end are written with zeros.
  public func writeZeroes(at offset: UInt64, length: UInt64) throws(DiskImageError) {
    guard !isReadOnly else { throw .invalid(path: path, reason: "the image is open read-only") }
    try checkRange(offset, Int(clamping: length))
    let clusterSize = header.clusterSize
    var position = offset
    let end = offset + length
    while position < end {
      let clusterStart = position & ~(clusterSize - 1)
      let pieceEnd = min(end, clusterStart + clusterSize)
      if position == clusterStart && pieceEnd == clusterStart + clusterSize {
        try withMetadata { state throws(DiskImageError) in try zeroCluster(at: clusterStart, in: &state) }
      } else {
        try write([UInt8](repeating: 0, count: Int(pieceEnd - position)), at: position)
      }
      position = pieceEnd
    }
  }

  /// Discards the range: the guest gives the space back and reads zeros there afterwards.
  public func discard(at offset: UInt64, length: UInt64) throws(DiskImageError) {
    try writeZeroes(at: offset, length: length)
  }

  private func zeroCluster(at position: UInt64, in state: inout State) throws(DiskImageError) {
    let header = state.header
    let backingData = backing.map { position < $0.size } ?? false
    guard header.version >= 3 else {
      if backingData {
        let zeros = UnsafeMutableRawBufferPointer.allocate(byteCount: Int(header.clusterSize), alignment: 8)
        defer { zeros.deallocate() }
        zeros.initializeMemory(as: UInt8.self, repeating: 0)
        try writeWithinCluster(UnsafeRawBufferPointer(zeros), at: position, inCluster: 0, in: &state)
      } else {
        try unmapCluster(at: position, in: &state)
      }
      return
    }
    let clusterBits = UInt64(header.clusterBits)
    let l1Index = Int(position >> (2 * clusterBits - 3))
    let slot = Int((position >> clusterBits) & (header.l2Entries - 1))
    if l1Index < state.l1.count, state.l1[l1Index] & Self.offsetMask == 0, !backingData { return }
    let l2Offset = try ownedL2Table(l1Index, in: &state)
    var table = try Self.l2Table(at: l2Offset, in: &state, file)
    let old = table[slot]
    if old == Self.zeroFlag || (old == 0 && !backingData) { return }
    let mapping = try Self.decode(old, header: header, path: path)
    table[slot] = Self.zeroFlag
    try file.write(BigEndian.bytes(Self.zeroFlag), at: l2Offset + UInt64(slot) * 8)
    state.l2Cache.insert(table, at: l2Offset)
    if case .zero = mapping, old & Self.offsetMask != 0 {
      try release(.data(hostOffset: old & Self.offsetMask, exclusive: false), in: &state)
    } else {
      try release(mapping, in: &state)
    }
  }
}
