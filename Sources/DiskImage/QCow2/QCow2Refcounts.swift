/// The refcount table and blocks of a qcow2 image, and cluster allocation.
///
/// Not thread-safe: the image serialises metadata changes. Updates are written through
/// to the file; callers flush at the ordering points (a cluster's refcount is durable
/// before anything points to it; a table is dropped only after nothing does).
struct QCow2Refcounts {
  let file: ImageFile
  let clusterBits: UInt64
  let refcountOrder: UInt64
  private(set) var tableOffset: UInt64
  private(set) var table: [UInt64]
  private var blocks: [UInt64: [UInt8]] = [:]
  /// While a batch is open: the changed byte range of each block not yet written.
  private var pending: [UInt64: Range<Int>] = [:]
  private var batchDepth = 0
  /// Host clusters something outside the image still reads (guest RAM mapped from the VM
  /// state area): never handed out again while the image is open, even at refcount 0.
  private var pinned: [Range<UInt64>] = []
  /// Where the search for a free cluster starts.
  private var freeHint: UInt64 = 0
  /// Called when the refcount table moves (the header must follow): new offset, clusters.
  var tableMoved: (UInt64, UInt32) throws(DiskImageError) -> Void = { _, _ in }

  static let maximumCachedBlocks = 256

  init(file: ImageFile, header: QCow2Header) throws(DiskImageError) {
    self.file = file
    clusterBits = UInt64(header.clusterBits)
    refcountOrder = UInt64(header.refcountOrder)
    tableOffset = header.refcountTableOffset
    let count = Int(UInt64(header.refcountTableClusters) << clusterBits / 8)
    table = try file.readEntries(count: count, at: tableOffset).map { $0 & QCow2Image.offsetMask }
  }

  var clusterSize: UInt64 { 1 << clusterBits }
  var bitsPerEntry: UInt64 { 1 << refcountOrder }
  var entriesPerBlock: UInt64 { clusterSize * 8 / bitsPerEntry }
  var maximumRefcount: UInt64 { bitsPerEntry == 64 ? .max : (1 << bitsPerEntry) - 1 }

  /// The refcount of host cluster `cluster` (0 where no block covers it).
  mutating func refcount(_ cluster: UInt64) throws(DiskImageError) -> UInt64 {
    let index = Int(cluster / entriesPerBlock)
    guard index < table.count, table[index] != 0 else { return 0 }
    let block = try loadBlock(at: table[index])
    return Self.entry(block, Int(cluster % entriesPerBlock), bits: Int(bitsPerEntry))
  }

  /// Sets the refcount of `cluster`, creating refcount blocks (and growing the table) as needed.
  mutating func setRefcount(_ cluster: UInt64, to value: UInt64) throws(DiskImageError) {
    guard value <= maximumRefcount else {
      throw .invalid(path: file.path, reason: "refcount of cluster \(cluster) would exceed \(maximumRefcount)")
    }
    let index = Int(cluster / entriesPerBlock)
    try ensureBlock(index)
    let blockOffset = table[index]
    var block = try loadBlock(at: blockOffset)
    let (range, bytes) = Self.setEntry(&block, Int(cluster % entriesPerBlock), bits: Int(bitsPerEntry), value: value)
    blocks[blockOffset] = block
    if batchDepth > 0 {
      pending[blockOffset] =
        pending[blockOffset].map {
          min($0.lowerBound, range.lowerBound)..<max($0.upperBound, range.upperBound)
        } ?? range
    } else {
      try file.write(Array(bytes), at: blockOffset + UInt64(range.lowerBound))
    }
    if value == 0 { freeHint = min(freeHint, cluster) }
  }

  /// Runs `body` as one batch: its refcount changes stay in memory and the outermost batch
  /// writes each changed block once (many small writes become one per block). Batches nest.
  /// The batch closes whatever `body` does: on an error, what it changed before is written
  /// too (as it would have been without batching) and the error is passed on.
  mutating func batch(_ body: (inout QCow2Refcounts) throws(DiskImageError) -> Void) throws(DiskImageError) {
    batchDepth += 1
    var failure: DiskImageError?
    do { try body(&self) } catch { failure = error }
    batchDepth -= 1
    if batchDepth == 0 {
      do { try writePending() } catch { if failure == nil { failure = error } }
    }
    if let failure { throw failure }
  }

  /// Writes the changed ranges of the batch so far (before an ordering point, or before the
  /// block cache drops blocks).
  private mutating func writePending() throws(DiskImageError) {
    guard !pending.isEmpty else { return }
    let dirty = pending.sorted { $0.key < $1.key }
    pending.removeAll(keepingCapacity: true)
    for (offset, range) in dirty {
      guard let block = blocks[offset] else { continue }
      try file.write(Array(block[range]), at: offset + UInt64(range.lowerBound))
    }
  }

  /// Finds `count` contiguous free clusters, gives them refcount 1, and returns the first one's offset.
  mutating func allocate(_ count: Int = 1) throws(DiskImageError) -> UInt64 {
    var start = max(freeHint, 1)
    var run = 0
    var candidate = start
    while run < count {
      if let pin = pinned.first(where: { $0.contains(candidate) }) {
        run = 0
        start = pin.upperBound
        candidate = pin.upperBound
        continue
      }
      if try refcount(candidate) == 0 {
        run += 1
      } else {
        run = 0
        start = candidate + 1
      }
      candidate += 1
    }
    // Past the run first, so a refcount block made for it is placed after it.
    freeHint = start + UInt64(count)
    try setRefcounts(start..<start + UInt64(count), to: 1)
    return start << clusterBits
  }

  /// Keeps the host clusters in `clusters` from being allocated again (see `pinned`).
  mutating func pin(_ clusters: Range<UInt64>) {
    guard !clusters.isEmpty else { return }
    if let last = pinned.last, last.upperBound == clusters.lowerBound {
      pinned[pinned.count - 1] = last.lowerBound..<clusters.upperBound
    } else {
      pinned.append(clusters)
    }
  }

  /// Sets the refcount of every cluster in `clusters` to `value`, one write per block.
  mutating func setRefcounts(_ clusters: Range<UInt64>, to value: UInt64) throws(DiskImageError) {
    try batch { (refcounts: inout QCow2Refcounts) throws(DiskImageError) in
      for cluster in clusters { try refcounts.setRefcount(cluster, to: value) }
    }
  }

  /// Adds `delta` to the refcount of every cluster in `[offset, offset + length)`.
  mutating func adjust(offset: UInt64, length: UInt64, by delta: Int64) throws(DiskImageError) {
    guard length > 0 else { return }
    let first = offset >> clusterBits
    let last = (offset + length - 1) >> clusterBits
    for cluster in first...last {
      // The current count is the image's (untrusted, up to 64 bits wide): checked arithmetic.
      let current = try refcount(cluster)
      let updated: UInt64
      if delta >= 0 {
        let (sum, overflow) = current.addingReportingOverflow(delta.magnitude)
        guard !overflow else {
          throw .invalid(path: file.path, reason: "refcount of cluster \(cluster) would overflow (it is \(current))")
        }
        updated = sum
      } else {
        guard current >= delta.magnitude else {
          throw .invalid(path: file.path, reason: "refcount of cluster \(cluster) would drop below zero")
        }
        updated = current - delta.magnitude
      }
      try setRefcount(cluster, to: updated)
    }
  }

  private mutating func loadBlock(at offset: UInt64) throws(DiskImageError) -> [UInt8] {
    if let block = blocks[offset] { return block }
    guard offset & (clusterSize - 1) == 0, offset + clusterSize <= max(file.length, offset + clusterSize) else {
      throw .invalid(path: file.path, reason: "refcount block at 0x\(String(offset, radix: 16)) is not cluster-aligned")
    }
    let block = try file.read(count: Int(clusterSize), at: offset)
    if blocks.count >= Self.maximumCachedBlocks {
      try writePending()
      blocks.removeAll(keepingCapacity: true)
    }
    blocks[offset] = block
    return block
  }

  /// Makes sure refcount block `index` exists: placed at the first free cluster past the
  /// file's end, counting itself when it covers its own cluster.
  private mutating func ensureBlock(_ index: Int) throws(DiskImageError) {
    if index < table.count && table[index] != 0 { return }
    if index >= table.count { try growTable(toCover: index) }
    if table[index] != 0 { return }
    let cluster = max(file.length + clusterSize - 1, freeHint << clusterBits) >> clusterBits
    var block = [UInt8](repeating: 0, count: Int(clusterSize))
    let ownIndex = Int(cluster / entriesPerBlock)
    if ownIndex == index {
      _ = Self.setEntry(&block, Int(cluster % entriesPerBlock), bits: Int(bitsPerEntry), value: 1)
    }
    let offset = cluster << clusterBits
    try file.write(block, at: offset)
    blocks[offset] = block
    freeHint = max(freeHint, cluster + 1)
    if ownIndex != index { try setRefcount(cluster, to: 1) }
    try writePending()
    try file.orderingPoint()
    table[index] = offset
    try writeTableEntry(index)
  }

  private func writeTableEntry(_ index: Int) throws(DiskImageError) {
    try file.write(Self.bigEndian(table[index]), at: tableOffset + UInt64(index) * 8)
  }

  /// Moves the table to a larger place at the end of the file, then points the header at it.
  private mutating func growTable(toCover index: Int) throws(DiskImageError) {
    let perCluster = Int(clusterSize / 8)
    let wanted = max(index + 1, table.count * 2)
    let clusters = (wanted + perCluster - 1) / perCluster
    // A cluster that far out can only come from a corrupt table; QEMU's limit is 8 MiB too.
    guard UInt64(clusters) << clusterBits <= QCow2Header.maximumRefcountTableBytes else {
      throw .invalid(
        path: file.path,
        reason: "the refcount table would grow past 8 MiB to count cluster \(UInt64(index) * entriesPerBlock); "
          + "the image is probably corrupt ('skvm img check')")
    }
    let oldOffset = tableOffset
    let oldClusters = UInt64((table.count + perCluster - 1) / perCluster)
    let newFirst = max(file.length + clusterSize - 1, freeHint << clusterBits) >> clusterBits
    freeHint = newFirst + UInt64(clusters)
    table += [UInt64](repeating: 0, count: clusters * perCluster - table.count)
    // Reserve the file space first, so blocks made below land after the new table.
    try file.truncate(to: max(file.length, (newFirst + UInt64(clusters)) << clusterBits))
    tableOffset = newFirst << clusterBits
    for cluster in newFirst..<newFirst + UInt64(clusters) { try setRefcount(cluster, to: 1) }
    try file.write(table.flatMap(Self.bigEndian), at: tableOffset)
    try writePending()
    try file.orderingPoint()
    try tableMoved(tableOffset, UInt32(clusters))
    try file.orderingPoint()
    try adjust(offset: oldOffset, length: oldClusters << clusterBits, by: -1)
  }

  static func bigEndian(_ value: UInt64) -> [UInt8] {
    (0..<8).map { UInt8(truncatingIfNeeded: value >> (56 - 8 * $0)) }
  }

  static func entry(_ block: [UInt8], _ index: Int, bits: Int) -> UInt64 {
    if bits < 8 {
      let perByte = 8 / bits
      let byte = block[index / perByte]
      return UInt64(byte >> UInt8((index % perByte) * bits)) & ((1 << UInt64(bits)) - 1)
    }
    let width = bits / 8
    return (0..<width).reduce(0) { $0 << 8 | UInt64(block[index * width + $1]) }
  }

  /// Sets an entry; returns the byte range changed and its new bytes.
  @discardableResult
  static func setEntry(_ block: inout [UInt8], _ index: Int, bits: Int, value: UInt64) -> (
    Range<Int>, ArraySlice<UInt8>
  ) {
    if bits < 8 {
      let perByte = 8 / bits
      let position = index / perByte
      let shift = UInt8((index % perByte) * bits)
      let mask = UInt8((1 << bits) - 1) << shift
      block[position] = (block[position] & ~mask) | (UInt8(truncatingIfNeeded: value) << shift & mask)
      return (position..<position + 1, block[position..<position + 1])
    }
    let width = bits / 8
    for byte in 0..<width {
      block[index * width + byte] = UInt8(truncatingIfNeeded: value >> UInt64(8 * (width - 1 - byte)))
    }
    return (index * width..<(index + 1) * width, block[index * width..<(index + 1) * width])
  }
}
