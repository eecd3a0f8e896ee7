extension QCow2Image {
  /// Points the image at another backing file (or none), rewriting the header cluster.
  /// Only the name changes: making the contents right is the caller's (`rebase` without -u).
  public func setBacking(file name: String?, format: DiskImageFormat?) throws(DiskImageError) {
    try withMetadata { state throws(DiskImageError) in
      guard state.header.autoclearFeatures == 0 else {
        throw .unsupported(path: path, feature: "changing the backing file of an image with bitmaps")
      }
      if let name, name.utf8.count > 1023 || name.isEmpty {
        throw .invalid(
          path: path,
          reason: "a backing file name must be 1 to 1023 bytes (this one has \(name.utf8.count)); use a shorter path")
      }
      var header = state.header
      header.backingFile = name
      header.backingFormat = name == nil ? nil : format?.rawValue
      header.backingFileOffset = 0
      header.backingFileSize = 0
      let bytes = header.encoded()
      guard bytes.count <= Int(header.clusterSize) else {
        throw .invalid(path: path, reason: "the backing file name does not fit in the header cluster")
      }
      try file.write(bytes + [UInt8](repeating: 0, count: Int(header.clusterSize) - bytes.count), at: 0)
      try file.orderingPoint()
      state.header = header
    }
  }
}

/// Sizes `qemu-img measure` reports for a qcow2 image.
public enum QCow2Measure {
  /// Metadata plus data of a fully allocated image of `size` bytes (QEMU's preallocation formula).
  public static func fullyAllocatedSize(size: UInt64, clusterSize: UInt64, refcountBits: UInt32) -> UInt64 {
    let aligned = (size + clusterSize - 1) / clusterSize * clusterSize
    let entriesPerCluster = clusterSize / 8
    func roundUp(_ value: UInt64, _ multiple: UInt64) -> UInt64 { (value + multiple - 1) / multiple * multiple }
    var metadata = clusterSize  // header
    let l2Entries = roundUp(aligned / clusterSize, entriesPerCluster)
    metadata += l2Entries * 8
    let l1Entries = roundUp(l2Entries * 8 / clusterSize, entriesPerCluster)
    metadata += l1Entries * 8
    let clusters = (metadata + aligned) / clusterSize
    let refcountsPerBlock = clusterSize * 8 / UInt64(refcountBits)
    var blocks: UInt64 = 0
    var table: UInt64 = 0
    var total: UInt64 = 0
    var last: UInt64
    repeat {
      last = total
      blocks = (clusters + table + blocks + refcountsPerBlock - 1) / refcountsPerBlock
      table = (blocks + entriesPerCluster - 1) / entriesPerCluster
      total = clusters + blocks + table
    } while total != last
    metadata += (blocks + table) * clusterSize
    return metadata + aligned
  }
}
