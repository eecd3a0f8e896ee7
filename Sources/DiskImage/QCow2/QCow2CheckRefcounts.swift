/// The kinds of L2 entry, classified as qemu's check classifies them (the zero flag counts
/// in version 2 images too).
enum QCow2EntryKind: Equatable {
  case compressed, zeroAllocated, zero, unallocated, normal

  init(_ entry: UInt64) {
    if entry & QCow2Image.compressedFlag != 0 {
      self = .compressed
    } else if entry & QCow2Image.zeroFlag != 0 {
      self = entry & QCow2Checker.tableOffsetMask != 0 ? .zeroAllocated : .zero
    } else if entry & QCow2Checker.tableOffsetMask == 0 {
      self = .unallocated
    } else {
      self = .normal
    }
  }
}

/// Reference counts computed from the image's tables: two bytes a cluster (saturating at
/// the image's refcount width), grown when a reference reaches just past the end of the file.
struct ComputedRefcounts {
  private var values: [UInt16]
  let clusterBits: UInt64
  let maximum: UInt64

  init(clusters: UInt64, clusterBits: UInt64, maximum: UInt64) {
    values = [UInt16](repeating: 0, count: Int(clusters))
    self.clusterBits = clusterBits
    self.maximum = maximum
  }

  var count: UInt64 { UInt64(values.count) }

  subscript(cluster: UInt64) -> UInt64 { cluster < count ? UInt64(values[Int(cluster)]) : 0 }

  mutating func grow(to clusters: UInt64) {
    if clusters > count { values += [UInt16](repeating: 0, count: Int(clusters - count)) }
  }

  /// Adds one reference; false if the count is already at its maximum.
  mutating func increment(_ cluster: UInt64) -> Bool {
    grow(to: cluster + 1)
    guard UInt64(values[Int(cluster)]) < maximum else { return false }
    values[Int(cluster)] += 1
    return true
  }

  mutating func set(_ cluster: UInt64, _ value: UInt64) {
    grow(to: cluster + 1)
    values[Int(cluster)] = UInt16(min(value, UInt64(UInt16.max)))
  }

  mutating func reset() {
    for index in values.indices { values[index] = 0 }
  }
}

/// The refcounts the image stores, read block by block (one block cached): a block the
/// table names at an unaligned offset cannot be read (qemu's EIO).
struct StoredRefcounts {
  let file: ImageFile
  let clusterBits: UInt64
  let refcountOrder: UInt64
  let table: [UInt64]
  private var cached: (offset: UInt64, block: [UInt8])?

  struct Unreadable: Error {}

  init(file: ImageFile, header: QCow2Header, table: [UInt64]) {
    self.file = file
    clusterBits = UInt64(header.clusterBits)
    refcountOrder = UInt64(header.refcountOrder)
    self.table = table
  }

  var entriesPerBlock: UInt64 { ((1 << clusterBits) * 8) >> refcountOrder }

  mutating func refcount(_ cluster: UInt64) throws(Unreadable) -> UInt64 {
    let index = cluster / entriesPerBlock
    guard index < UInt64(table.count) else { return 0 }
    let offset = table[Int(index)] & QCow2Checker.tableOffsetMask
    guard offset != 0 else { return 0 }
    guard offset & ((1 << clusterBits) - 1) == 0 else { throw Unreadable() }
    if cached?.offset != offset {
      guard let block = try? file.read(count: 1 << Int(clusterBits), at: offset) else { throw Unreadable() }
      cached = (offset, block)
    }
    return QCow2Refcounts.entry(cached?.block ?? [], Int(cluster % entriesPerBlock), bits: 1 << Int(refcountOrder))
  }

  /// Drops the cached block holding `cluster` (it was just rewritten).
  mutating func forget(_ cluster: UInt64) { cached = nil }
}

func hex(_ value: UInt64) -> String { String(value, radix: 16) }
