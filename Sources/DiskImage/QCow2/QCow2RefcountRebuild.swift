/// Rebuilding a refcount structure that cannot be trusted (blocks unaligned, shared, outside
/// the file, or missing where clusters are in use), from the counts `check` computed — what
/// `qemu-img check -r all` does in that case.
extension QCow2Checker {
  /// Writes new refcount blocks and a new refcount table after the end of the file, holding
  /// the computed counts (and counting themselves), then points the header at the new table.
  /// The old structure is left behind as leaked clusters, which the caller then frees.
  mutating func rebuildRefcountStructure() throws(DiskImageError) {
    let entriesPerBlock = (clusterSize * 8) >> UInt64(header.refcountOrder)
    let pointersPerCluster = clusterSize / 8
    let start = max(counts.count, (fileLength + clusterSize - 1) >> clusterBits)
    // Blocks must cover the clusters in use and themselves and the table: find the fixed point.
    var blocks: UInt64 = 0
    var tableClusters: UInt64 = 0
    while true {
      let covered = start + blocks + tableClusters
      let neededBlocks = (covered + entriesPerBlock - 1) / entriesPerBlock
      let neededTable = max(1, (neededBlocks + pointersPerCluster - 1) / pointersPerCluster)
      if neededBlocks == blocks && neededTable == tableClusters { break }
      blocks = neededBlocks
      tableClusters = neededTable
    }
    guard tableClusters << clusterBits <= QCow2Header.maximumRefcountTableBytes else {
      result.checkErrors += 1
      report("ERROR allocating reftable: File too large")
      throw .invalid(path: file.path, reason: "a rebuilt refcount table would be larger than 8 MiB")
    }
    for cluster in start..<start + blocks + tableClusters { counts.set(cluster, 1) }
    var table = [UInt64](repeating: 0, count: Int(tableClusters * pointersPerCluster))
    let bits = 1 << Int(header.refcountOrder)
    for index in 0..<blocks {
      var block = [UInt8](repeating: 0, count: Int(clusterSize))
      let first = index * entriesPerBlock
      for entry in 0..<entriesPerBlock where first + entry < counts.count {
        let value = counts[first + entry]
        if value != 0 { QCow2Refcounts.setEntry(&block, Int(entry), bits: bits, value: value) }
      }
      let offset = (start + index) << clusterBits
      try file.write(block, at: offset)
      table[Int(index)] = offset
    }
    let tableOffset = (start + blocks) << clusterBits
    try file.write(table.flatMap(BigEndian.bytes), at: tableOffset)
    try file.flush()
    try file.write(BigEndian.bytes(tableOffset) + BigEndian.bytes(UInt32(tableClusters)), at: 48)
    try file.flush()
    fileLength = file.length
    header = try QCow2Header.read(from: file, forCheck: true)
  }
}
