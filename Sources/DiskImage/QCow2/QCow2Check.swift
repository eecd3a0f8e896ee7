import Checked

/// One pass of qemu-img's consistency check over a qcow2 image: it builds reference counts
/// from every table (qemu's in-memory refcount table, two bytes a cluster at most), compares
/// them with the stored ones, and checks the COPIED flags, repairing as asked. Every offset
/// it follows is untrusted: references past the end of the file, unaligned tables and
/// reserved bits are reported, never followed into a trap.
struct QCow2Checker {
  let file: ImageFile
  var header: QCow2Header
  let repair: QCow2Repair
  var result = QCow2CheckResult()
  var counts: ComputedRefcounts
  /// Set when the stored refcount structure cannot be repaired entry by entry.
  var rebuild = false
  /// The file's length (it changes only through this checker while it runs).
  var fileLength: UInt64

  static let l1ReservedMask: UInt64 = 0x7F00_0000_0000_01FF
  static let l2ReservedMask: UInt64 = 0x3F00_0000_0000_01FE
  static let refcountTableReservedMask: UInt64 = 0x1FF
  static let tableOffsetMask: UInt64 = 0x00FF_FFFF_FFFF_FE00

  init(file: ImageFile, header: QCow2Header, repair: QCow2Repair) {
    self.file = file
    self.header = header
    self.repair = repair
    let fileLength = file.length
    self.fileLength = fileLength
    let clusterBits = UInt64(header.clusterBits)
    counts = ComputedRefcounts(
      clusters: (fileLength + header.clusterSize - 1) >> clusterBits, clusterBits: clusterBits,
      maximum: header.refcountOrder >= 4 ? UInt64(UInt16.max) : (1 << UInt64(header.refcountBits)) - 1)
  }

  var clusterSize: UInt64 { header.clusterSize }
  var clusterBits: UInt64 { UInt64(header.clusterBits) }

  mutating func report(_ message: String) { result.messages.append(message) }

  /// Counts `[offset, offset + length)`, as qemu does: a region reaching a cluster or more past
  /// the end of the file is a corruption and is not counted.
  mutating func reference(_ offset: UInt64, _ length: UInt64) {
    guard length > 0 else { return }
    guard let end = offset.checkedAdding(length), end < fileLength || end - fileLength < clusterSize else {
      result.corruptions += 1
      report(
        "ERROR: counting reference for region exceeding the end of the file by one cluster or more: "
          + "offset 0x\(hex(offset)) size 0x\(hex(length))")
      return
    }
    for cluster in (offset >> clusterBits)...((end - 1) >> clusterBits) {
      if !counts.increment(cluster) {
        result.corruptions += 1
        report("ERROR: overflow cluster offset=0x\(hex(cluster << clusterBits))")
      }
    }
  }

  /// The whole check: counts, compares (rebuilding or repairing), then the COPIED flags.
  mutating func run() throws(DiskImageError) -> QCow2CheckResult {
    result.totalClusters = (header.size + clusterSize - 1) >> clusterBits
    let parsed = try QCow2Snapshot.parseTable(header: header, file: file)
    var snapshots = parsed.snapshots
    var tableLength = parsed.length
    try checkSnapshotTable(&snapshots, tableLength: &tableLength, damage: parsed.damage)
    try calculate(snapshots: snapshots, tableLength: tableLength, frag: true)
    let beforeCompare = result
    var highest = compare(fixing: .none)
    if rebuild && repair.fixesErrors {
      let old = result
      report("Rebuilding refcount structure")
      try rebuildRefcountStructure()
      // The new structure replaces the old one, whose clusters are now leaked: count again.
      result.corruptions = 0
      result.leaks = 0
      rebuild = false
      counts.reset()
      try calculate(snapshots: snapshots, tableLength: tableLength, frag: false)
      let saved = result
      result = QCow2CheckResult()
      highest = compare(fixing: .leaks)
      if rebuild { report("ERROR rebuilt refcount structure is still broken") }
      let freshLeaks = result.leaks
      let messages = result.messages
      result = saved
      result.messages += messages
      if result.corruptions < old.corruptions { result.corruptionsFixed += old.corruptions - result.corruptions }
      if result.leaks < old.leaks { result.leaksFixed += old.leaks - result.leaks }
      result.leaks += freshLeaks
    } else if repair != .none {
      if rebuild {
        report("ERROR need to rebuild refcount structures")
        result.checkErrors += 1
        return finish(highest: highest)
      }
      if result.leaks > 0 || result.corruptions > 0 {
        let messages = result.messages
        result = beforeCompare
        result.messages = messages
        highest = compare(fixing: repair)
      }
    }
    try checkCopiedFlags()
    try completeSnapshotEntries(snapshots)
    return finish(highest: highest)
  }

  /// Version 3 snapshot entries must carry at least 16 bytes of extra data (the VM state size
  /// and the disk size); a full repair writes the table anew with complete entries, once the
  /// refcounts can be trusted to allocate it.
  private mutating func completeSnapshotEntries(_ snapshots: [QCow2Snapshot]) throws(DiskImageError) {
    guard header.version >= 3 else { return }
    let incomplete = snapshots.indices.filter { snapshots[$0].extraDataSize < 16 }
    guard !incomplete.isEmpty else { return }
    for index in incomplete {
      result.corruptions += 1
      report("\(repair.fixesErrors ? "Repairing" : "ERROR") snapshot table entry \(index) is incomplete")
    }
    guard repair.fixesErrors, result.corruptions == incomplete.count, result.checkErrors == 0 else { return }
    var refcounts = try QCow2Refcounts(file: file, header: header)
    refcounts.tableMoved = QCow2Image.headerFollowsRefcountTable(file)
    let complete = snapshots.map { snapshot -> QCow2Snapshot in
      var entry = snapshot
      entry.storedEntry = []
      entry.diskSize = entry.diskSize ?? header.size
      return entry
    }
    let bytes = QCow2Snapshot.encodeTable(complete)
    let clusters = (UInt64(bytes.count) + clusterSize - 1) >> clusterBits
    let offset = try refcounts.allocate(Int(clusters))
    try file.write(bytes, at: offset)
    try file.orderingPoint()
    let oldOffset = header.snapshotsOffset
    let oldLength = try QCow2Snapshot.parseTable(header: header, file: file).length
    try file.write(BigEndian.bytes(UInt32(complete.count)) + BigEndian.bytes(offset), at: 60)
    try file.orderingPoint()
    try refcounts.adjust(offset: oldOffset, length: oldLength, by: -1)
    header = try QCow2Header.read(from: file, forCheck: true)
    result.corruptions -= incomplete.count
    result.corruptionsFixed += incomplete.count
  }

  private mutating func finish(highest: UInt64) -> QCow2CheckResult {
    result.imageEndOffset = (highest + 1) << clusterBits
    if repair != .none { try? file.orderingPoint() }
    return result
  }

  // MARK: Counting

  /// Counts the header, the active and snapshot L1/L2 tables and what they map, the snapshot
  /// table, the refcount table and its blocks.
  mutating func calculate(snapshots: [QCow2Snapshot], tableLength: UInt64, frag: Bool) throws(DiskImageError) {
    reference(0, clusterSize)
    try checkL1(offset: header.l1TableOffset, size: header.l1Size, active: true, frag: frag)
    for snapshot in snapshots {
      guard snapshotL1IsValid(snapshot) else { continue }
      try checkL1(offset: snapshot.l1TableOffset, size: snapshot.l1Size, active: false, frag: false)
    }
    if header.snapshotCount > 0 { reference(header.snapshotsOffset, tableLength) }
    reference(header.refcountTableOffset, UInt64(header.refcountTableClusters) << clusterBits)
    try checkRefcountBlocks()
  }

  private func snapshotL1IsValid(_ snapshot: QCow2Snapshot) -> Bool {
    snapshot.l1TableOffset & (clusterSize - 1) == 0
      && UInt64(snapshot.l1Size) * 8 <= QCow2Header.maximumL1Bytes
      && snapshot.l1TableOffset.fits(length: UInt64(snapshot.l1Size) * 8, within: UInt64(Int64.max))
  }

  private mutating func checkL1(offset: UInt64, size: UInt32, active: Bool, frag: Bool) throws(DiskImageError) {
    let bytes = UInt64(size) * 8
    reference(offset, bytes)
    guard size > 0 else { return }
    let l1 = try readEntries(count: Int(size), at: offset)
    for index in 0..<Int(size) {
      let entry = l1[index]
      if entry & Self.l1ReservedMask != 0 {
        result.corruptions += 1
        report("ERROR found L1 entry with reserved bits set: \(hex(entry))")
      }
      // As qemu-img: any non-zero entry names a table, even one whose offset bits are zero.
      guard entry != 0 else { continue }
      let l2Offset = entry & Self.tableOffsetMask
      reference(l2Offset, clusterSize)
      if l2Offset & (clusterSize - 1) != 0 {
        result.corruptions += 1
        report("ERROR l2_offset=\(hex(l2Offset)): Table is not cluster aligned; L1 entry corrupted")
      }
      try checkL2(at: l2Offset, active: active, frag: frag)
    }
  }

  private mutating func checkL2(at l2Offset: UInt64, active: Bool, frag: Bool) throws(DiskImageError) {
    // A table wholly past the end of the file reads as zeros: nothing in it to count.
    guard l2Offset < fileLength else { return }
    var table = try readEntries(count: Int(header.l2Entries), at: l2Offset)
    var nextContiguous: UInt64 = 0
    // Whether this table overlaps other metadata, asked once (fixes write only its entries, so
    // the answer holds for the whole table): a table of thousands of bad entries is not
    // thousands of reads of every other table.
    var overlap: Bool?
    for slot in 0..<Int(header.l2Entries) {
      let entry = table[slot]
      switch QCow2EntryKind(entry) {
      case .compressed:
        if entry & QCow2Image.copiedFlag != 0 {
          result.corruptions += 1
          report(
            "ERROR: coffset=0x\(hex(compressedRange(entry).offset)): copied flag must never be set for compressed clusters"
          )
        }
        let range = compressedRange(entry)
        reference(range.offset, range.length)
        if frag {
          result.allocatedClusters += 1
          result.compressedClusters += 1
          result.fragmentedClusters += 1
        }
      case .normal, .zeroAllocated:
        if entry & Self.l2ReservedMask != 0 {
          result.corruptions += 1
          report("ERROR found l2 entry with reserved bits set: \(hex(entry))")
        }
        let offset = entry & Self.tableOffsetMask
        if offset & (clusterSize - 1) != 0 {
          result.corruptions += 1
          if QCow2EntryKind(entry) == .zeroAllocated {
            report(
              "\(repair.fixesErrors ? "Repairing" : "ERROR") offset=\(hex(offset)): Preallocated cluster is not "
                + "properly aligned; L2 entry corrupted.")
            if repair.fixesErrors, try fixEntryByZero(&table, slot: slot, l2Offset: l2Offset, overlap: &overlap) {
              result.corruptions -= 1
              result.corruptionsFixed += 1
              continue
            }
          } else {
            report("ERROR offset=\(hex(offset)): Data cluster is not properly aligned; L2 entry corrupted.")
          }
        }
        if frag {
          result.allocatedClusters += 1
          if nextContiguous != 0 && offset != nextContiguous { result.fragmentedClusters += 1 }
          nextContiguous = offset &+ clusterSize
        }
        reference(offset, clusterSize)
      case .zero, .unallocated:
        if entry & Self.l2ReservedMask != 0 {
          result.corruptions += 1
          report("ERROR found l2 entry with reserved bits set: \(hex(entry))")
        }
      }
    }
  }

  /// Turns a preallocated zero cluster with an unaligned offset into a plain zero cluster.
  private mutating func fixEntryByZero(
    _ table: inout [UInt64], slot: Int, l2Offset: UInt64, overlap: inout Bool?
  ) throws(DiskImageError) -> Bool {
    let overlaps = overlap ?? overlapsMetadata(l2Offset, except: .activeL2)
    overlap = overlaps
    guard !overlaps else {
      result.checkErrors += 1
      report("ERROR: Overlap check failed")
      return false
    }
    table[slot] = QCow2Image.zeroFlag
    try file.write(BigEndian.bytes(QCow2Image.zeroFlag), at: l2Offset + UInt64(slot) * 8)
    return true
  }

  private func compressedRange(_ entry: UInt64) -> (offset: UInt64, length: UInt64) {
    let shift = 62 - (clusterBits - 8)
    let offset = entry & ((1 << shift) - 1)
    let sectors = ((entry >> shift) & ((1 << (clusterBits - 8)) - 1)) + 1
    return (offset, sectors * 512 - (offset & 511))
  }

  /// Counts every refcount block and checks it: reserved bits, alignment, inside the file,
  /// referenced once. Blocks that fail need a rebuilt refcount structure.
  private mutating func checkRefcountBlocks() throws(DiskImageError) {
    let table = try storedTable()
    for (index, raw) in table.enumerated() {
      let offset = raw & ~Self.refcountTableReservedMask
      if raw & Self.refcountTableReservedMask != 0 {
        result.corruptions += 1
        report("ERROR refcount table entry \(index) has reserved bits set")
        rebuild = true
        continue
      }
      if offset & (clusterSize - 1) != 0 {
        result.corruptions += 1
        report("ERROR refcount block \(index) is not cluster aligned; refcount table entry corrupted")
        rebuild = true
        continue
      }
      let cluster = offset >> clusterBits
      if cluster >= counts.count {
        result.corruptions += 1
        report("\(repair.fixesErrors ? "Repairing" : "ERROR") refcount block \(index) is outside image")
        if repair.fixesErrors {
          // Growing the file to hold the block is qemu-img's repair; a block absurdly far out
          // (more than 4× the clusters there are, or 2^28) is rebuilt instead, so memory stays bounded.
          if let end = offset.checkedAdding(clusterSize), end >> clusterBits <= max(counts.count * 4, 4096),
            end >> clusterBits <= 1 << 28, (try? file.truncate(to: end)) != nil
          {
            fileLength = end
            counts.grow(to: (end + clusterSize - 1) >> clusterBits)
            result.corruptions -= 1
            result.corruptionsFixed += 1
            reference(offset, clusterSize)
            continue
          }
          report("ERROR could not resize image to hold refcount block \(index)")
          rebuild = true
        }
        continue
      }
      guard offset != 0 else { continue }
      reference(offset, clusterSize)
      let count = counts[cluster]
      if count != 1 {
        result.corruptions += 1
        report("ERROR refcount block \(index) refcount=\(count)")
        rebuild = true
      }
    }
  }

  func readEntries(count: Int, at offset: UInt64) throws(DiskImageError) -> [UInt64] {
    try file.readEntries(count: count, at: offset)
  }

  /// The refcount table as stored, reserved bits and all.
  func storedTable() throws(DiskImageError) -> [UInt64] {
    try readEntries(
      count: Int((UInt64(header.refcountTableClusters) << clusterBits) / 8), at: header.refcountTableOffset)
  }

  // MARK: Comparing

  /// Compares stored and counted refcounts cluster by cluster, fixing what `fixing` allows;
  /// returns the highest cluster in use.
  mutating func compare(fixing: QCow2Repair) -> UInt64 {
    var stored = StoredRefcounts(file: file, header: header, table: (try? storedTable()) ?? [])
    var writer: QCow2Refcounts? = fixing == .none ? nil : try? QCow2Refcounts(file: file, header: header)
    writer?.tableMoved = QCow2Image.headerFollowsRefcountTable(file)
    var highest: UInt64 = 0
    var cluster: UInt64 = 0
    while cluster < counts.count {
      defer { cluster += 1 }
      let current: UInt64
      do {
        current = try stored.refcount(cluster)
      } catch {
        report("Can't get refcount for cluster \(cluster): Input/output error")
        result.checkErrors += 1
        continue
      }
      let counted = UInt64(counts[cluster])
      if current > 0 || counted > 0 { highest = cluster }
      guard current != counted else { continue }
      var fixable = false
      if current == 0 {
        rebuild = true
      } else if current > counted && fixing.fixesLeaks {
        fixable = true
      } else if current < counted && fixing.fixesErrors {
        fixable = true
      }
      report(
        "\(fixable ? "Repairing" : current < counted ? "ERROR" : "Leaked") cluster \(cluster) refcount=\(current) "
          + "reference=\(counted)")
      if fixable, writer != nil, (try? writer?.setRefcount(cluster, to: counted)) != nil {
        stored.forget(cluster)
        if current > counted { result.leaksFixed += 1 } else { result.corruptionsFixed += 1 }
        continue
      }
      if current < counted { result.corruptions += 1 } else { result.leaks += 1 }
    }
    return highest
  }

  // MARK: COPIED flags

  /// The active L1 and L2 entries must carry COPIED exactly when their cluster's refcount is 1.
  mutating func checkCopiedFlags() throws(DiskImageError) {
    var stored = StoredRefcounts(file: file, header: header, table: (try? storedTable()) ?? [])
    guard header.l1Size > 0 else { return }
    let l1 = try readEntries(count: Int(header.l1Size), at: header.l1TableOffset)
    for index in 0..<Int(header.l1Size) {
      let entry = l1[index]
      let l2Offset = entry & Self.tableOffsetMask
      guard l2Offset != 0 else { continue }
      if let refcount = try? stored.refcount(l2Offset >> clusterBits),
        (refcount == 1) != (entry & QCow2Image.copiedFlag != 0)
      {
        result.corruptions += 1
        report(
          "\(repair.fixesErrors ? "Repairing" : "ERROR") OFLAG_COPIED L2 cluster: l1_index=\(index) "
            + "l1_entry=\(hex(entry)) refcount=\(refcount)")
        if repair.fixesErrors {
          let fixed = refcount == 1 ? entry | QCow2Image.copiedFlag : entry & ~QCow2Image.copiedFlag
          try file.write(BigEndian.bytes(fixed), at: header.l1TableOffset + UInt64(index) * 8)
          result.corruptions -= 1
          result.corruptionsFixed += 1
        }
      }
      guard l2Offset < fileLength else { continue }
      var table = try readEntries(count: Int(header.l2Entries), at: l2Offset)
      var dirty = 0
      for slot in 0..<Int(header.l2Entries) {
        let l2Entry = table[slot]
        let kind = QCow2EntryKind(l2Entry)
        guard kind == .normal || kind == .zeroAllocated,
          let refcount = try? stored.refcount((l2Entry & Self.tableOffsetMask) >> clusterBits),
          (refcount == 1) != (l2Entry & QCow2Image.copiedFlag != 0)
        else { continue }
        result.corruptions += 1
        report(
          "\(repair.fixesErrors ? "Repairing" : "ERROR") OFLAG_COPIED data cluster: l2_entry=\(hex(l2Entry)) "
            + "refcount=\(refcount)")
        if repair.fixesErrors {
          let fixed = refcount == 1 ? l2Entry | QCow2Image.copiedFlag : l2Entry & ~QCow2Image.copiedFlag
          table[slot] = fixed
          dirty += 1
        }
      }
      guard dirty > 0 else { continue }
      guard !overlapsMetadata(l2Offset, except: .activeL2) else {
        report("ERROR: Could not write L2 table; metadata overlap check failed: Input/output error")
        result.checkErrors += 1
        return
      }
      try file.write(table.flatMap(BigEndian.bytes), at: l2Offset)
      result.corruptions -= dirty
      result.corruptionsFixed += dirty
    }
  }

  // MARK: Snapshot table

  /// Snapshots whose L1 table cannot be valid (unaligned, too large, beyond any file) are
  /// corruptions; a full repair drops them from the table.
  private mutating func checkSnapshotTable(
    _ snapshots: inout [QCow2Snapshot], tableLength: inout UInt64, damage: String?
  ) throws(DiskImageError) {
    var changed = false
    if let damage {
      // Entries after the damage cannot be read: a full repair keeps those before it.
      result.corruptions += 1
      report("\(repair.fixesErrors ? "Repairing" : "ERROR") the snapshot table: \(damage)")
      if repair.fixesErrors {
        result.corruptions -= 1
        result.corruptionsFixed += 1
        changed = true
      } else {
        result.checkErrors += 1
        return
      }
    }
    var kept: [QCow2Snapshot] = []
    for snapshot in snapshots {
      if snapshotL1IsValid(snapshot) {
        kept.append(snapshot)
        continue
      }
      result.corruptions += 1
      report(
        "\(repair.fixesErrors ? "Repairing" : "ERROR") snapshot \(snapshot.id) (\(snapshot.name)) "
          + "l1_offset=0x\(hex(snapshot.l1TableOffset)) l1_size=0x\(hex(UInt64(snapshot.l1Size))): "
          + "invalid L1 table; snapshot table entry corrupted")
      if repair.fixesErrors {
        result.corruptions -= 1
        result.corruptionsFixed += 1
      } else {
        kept.append(snapshot)
      }
    }
    guard changed || kept.count != snapshots.count else { return }
    snapshots = kept
    // The table is rewritten in place: fewer entries never need more room.
    let bytes = QCow2Snapshot.encodeTable(kept)
    tableLength = UInt64(bytes.count)
    if !kept.isEmpty { try file.write(bytes, at: header.snapshotsOffset) }
    try file.orderingPoint()
    try file.write(BigEndian.bytes(UInt32(kept.count)), at: 60)
    if kept.isEmpty { try file.write(BigEndian.bytes(UInt64(0)), at: 64) }
    try file.orderingPoint()
    header = try QCow2Header.read(from: file, forCheck: true)
  }

  // MARK: Metadata overlap

  enum MetadataArea { case activeL2, none }

  /// Whether writing the cluster at `offset` would overwrite the header, a table or a
  /// refcount block (qemu's pre-write overlap check), ignoring `except`.
  func overlapsMetadata(_ offset: UInt64, except: MetadataArea) -> Bool {
    let start = offset & ~(clusterSize - 1)
    func overlaps(_ other: UInt64, _ length: UInt64) -> Bool {
      guard length > 0 else { return false }
      let otherEnd = other.checkedAdding(length) ?? .max
      return start < otherEnd && other < start &+ clusterSize
    }
    if start < clusterSize { return true }
    if overlaps(header.l1TableOffset, UInt64(header.l1Size) * 8) { return true }
    if overlaps(header.refcountTableOffset, UInt64(header.refcountTableClusters) << clusterBits) { return true }
    for raw in (try? storedTable()) ?? [] where raw & Self.tableOffsetMask != 0 {
      if overlaps(raw & Self.tableOffsetMask, clusterSize) { return true }
    }
    if except != .activeL2, let l1 = try? file.readEntries(count: Int(header.l1Size), at: header.l1TableOffset) {
      for entry in l1 where entry & Self.tableOffsetMask != 0 {
        if overlaps(entry & Self.tableOffsetMask, clusterSize) { return true }
      }
    }
    return false
  }
}
