/// What `check` found in a qcow2 image, with qemu-img's categories.
public struct QCow2CheckResult: Sendable, Equatable {
  public var corruptions = 0
  public var leaks = 0
  public var corruptionsFixed = 0
  public var leaksFixed = 0
  public var checkErrors = 0
  public var totalClusters: UInt64 = 0
  public var allocatedClusters: UInt64 = 0
  public var fragmentedClusters: UInt64 = 0
  public var compressedClusters: UInt64 = 0
  public var imageEndOffset: UInt64 = 0
  /// One line per problem, as qemu-img prints them.
  public var messages: [String] = []
}

/// What `check` may repair (qemu-img check -r).
public enum QCow2Repair: Sendable {
  case none
  /// Lower refcounts that are too high (leaked clusters).
  case leaks
  /// Also raise refcounts that are too low and correct COPIED flags.
  case all
}

extension QCow2Image {
  /// Recounts every reference (header, tables, snapshots, L2 tables, data), compares the
  /// counts with the stored refcounts, and repairs what `repair` allows; after a repair the
  /// image is checked again and that result returned, with what was fixed.
  public func check(repair: QCow2Repair = .none) throws(DiskImageError) -> QCow2CheckResult {
    let first = try checkOnce(repair: repair)
    guard repair != .none, first.leaksFixed + first.corruptionsFixed > 0 || repair == .all else { return first }
    try withMetadata { state throws(DiskImageError) in
      guard state.refcounts != nil else { return }
      state.refcounts = try QCow2Refcounts(file: file, header: state.header)
      state.l2Cache = L2Cache(capacity: state.l2Cache.capacity)
      if repair == .all { try updateCopiedFlags(in: &state) }
      try file.orderingPoint()
    }
    var second = try checkOnce(repair: .none)
    second.leaksFixed = first.leaksFixed
    second.corruptionsFixed =
      first.corruptionsFixed + max(0, first.corruptions - second.corruptions - first.corruptionsFixed)
    return second
  }

  private func checkOnce(repair: QCow2Repair) throws(DiskImageError) -> QCow2CheckResult {
    let repairLeaks = repair != .none
    let header = self.header
    let clusterSize = header.clusterSize
    let clusterBits = UInt64(header.clusterBits)
    let fileLength = file.length
    let clusterCount = Int((fileLength + clusterSize - 1) >> clusterBits)
    var expected = [UInt32](repeating: 0, count: clusterCount)
    var result = QCow2CheckResult()
    result.totalClusters = (header.size + clusterSize - 1) >> clusterBits

    func reference(_ offset: UInt64, _ length: UInt64, _ what: String) {
      guard length > 0 else { return }
      let first = offset >> clusterBits
      let last = (offset + length - 1) >> clusterBits
      guard last < UInt64(clusterCount) else {
        result.corruptions += 1
        result.messages.append(
          "ERROR \(what) at offset 0x\(String(offset, radix: 16)) is past the end of the image file")
        return
      }
      for cluster in first...last { expected[Int(cluster)] &+= 1 }
    }

    reference(0, clusterSize, "header")
    var refcounts = try QCow2Refcounts(file: file, header: header)
    reference(header.refcountTableOffset, UInt64(header.refcountTableClusters) * clusterSize, "refcount table")
    for block in refcounts.table where block != 0 { reference(block, clusterSize, "refcount block") }
    let (snapshots, tableLength) = try QCow2Snapshot.readTable(header: header, file: file)
    reference(header.snapshotsOffset, tableLength, "snapshot table")
    var l1Tables = [(offset: header.l1TableOffset, size: header.l1Size, active: true)]
    l1Tables += snapshots.map { ($0.l1TableOffset, $0.l1Size, false) }
    var lastDataCluster: UInt64 = 0
    var copiedChecks: [(entry: UInt64, offset: UInt64, what: String)] = []
    for l1 in l1Tables {
      reference(l1.offset, UInt64(l1.size) * 8, "L1 table")
      let l1Reader = BigEndianReader(try file.read(count: Int(l1.size) * 8, at: l1.offset))
      for index in 0..<Int(l1.size) {
        let l1Entry = l1Reader.u64(index * 8)
        let l2Offset = l1Entry & Self.offsetMask
        guard l2Offset != 0 else { continue }
        guard l2Offset & (clusterSize - 1) == 0, l2Offset + clusterSize <= fileLength else {
          result.corruptions += 1
          result.messages.append("ERROR L2 table offset 0x\(String(l2Offset, radix: 16)) is invalid")
          continue
        }
        reference(l2Offset, clusterSize, "L2 table")
        if l1.active { copiedChecks.append((l1Entry, l2Offset, "L1")) }
        let l2Reader = BigEndianReader(try file.read(count: Int(clusterSize), at: l2Offset))
        for slot in 0..<Int(header.l2Entries) {
          let entry = l2Reader.u64(slot * 8)
          guard entry != 0 else { continue }
          switch try? Self.decode(entry, header: header, path: path) {
          case .compressed(let host, let length)?:
            reference(host & ~511, UInt64(length) + (host & 511), "compressed cluster")
            if l1.active {
              result.compressedClusters += 1
              result.allocatedClusters += 1
            }
          case .data(let host, _)?:
            reference(host, clusterSize, "data cluster")
            if l1.active {
              result.allocatedClusters += 1
              if lastDataCluster != 0 && host != lastDataCluster + clusterSize { result.fragmentedClusters += 1 }
              lastDataCluster = host
              copiedChecks.append((entry, host, "L2"))
            }
          case .zero?:
            let host = entry & Self.offsetMask
            if host != 0 { reference(host, clusterSize, "preallocated zero cluster") }
          case .unallocated?:
            break
          case nil:
            result.corruptions += 1
            result.messages.append("ERROR L2 entry 0x\(String(entry, radix: 16)) is invalid")
          }
        }
      }
    }
    // Compare with what is stored.
    let coveredClusters = UInt64(refcounts.table.count) * refcounts.entriesPerBlock
    let limit = max(UInt64(clusterCount), 0)
    for cluster in 0..<min(limit, coveredClusters) {
      let stored = try refcounts.refcount(cluster)
      let counted = UInt64(expected[Int(cluster)])
      if stored == counted { continue }
      if stored < counted {
        result.corruptions += 1
        if repair == .all {
          try refcounts.setRefcount(cluster, to: counted)
          result.corruptionsFixed += 1
        } else {
          result.messages.append("ERROR cluster \(cluster) refcount=\(stored) reference=\(counted)")
        }
      } else {
        result.leaks += 1
        if repairLeaks {
          try refcounts.setRefcount(cluster, to: counted)
          result.leaksFixed += 1
        } else {
          result.messages.append("Leaked cluster \(cluster) refcount=\(stored) reference=\(counted)")
        }
      }
    }
    if limit > coveredClusters {
      for cluster in coveredClusters..<limit where expected[Int(cluster)] > 0 {
        result.corruptions += 1
        if repair == .all {
          try refcounts.setRefcount(cluster, to: UInt64(expected[Int(cluster)]))
          result.corruptionsFixed += 1
        } else {
          result.messages.append("ERROR cluster \(cluster) refcount=0 reference=\(expected[Int(cluster)])")
        }
      }
    }
    for check in copiedChecks {
      let stored = try refcounts.refcount(check.offset >> clusterBits)
      let copied = check.entry & Self.copiedFlag != 0
      if copied != (stored == 1) {
        result.corruptions += 1
        result.messages.append(
          "ERROR OFLAG_COPIED \(check.what): offset=\(String(check.offset, radix: 16)) refcount=\(stored)")
      }
    }
    if repairLeaks {
      try file.orderingPoint()
      result.leaks -= result.leaksFixed
      result.corruptions -= result.corruptionsFixed
    }
    let lastUsed = expected.lastIndex(where: { $0 > 0 }).map { UInt64($0 + 1) } ?? 1
    result.imageEndOffset = lastUsed << clusterBits
    return result
  }
}
