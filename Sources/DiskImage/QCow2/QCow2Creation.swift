/// Creating new qcow2 images, laid out as qemu-img lays them out: the header (with a
/// backing-format and a feature-name extension) in cluster 0, the refcount table in
/// cluster 1, the first refcount block in cluster 2, the L1 table from cluster 3.
public struct QCow2CreateOptions: Sendable, Equatable {
  public var size: UInt64
  public var clusterSize: UInt64 = 65536
  /// "1.1" (version 3, the default) or "0.10" (version 2).
  public var compat: String = "1.1"
  public var refcountBits: UInt32 = 16
  public var lazyRefcounts = false
  public var backingFile: String?
  public var backingFormat: DiskImageFormat?
  public var preallocation: QCow2Preallocation = .off

  public init(size: UInt64) { self.size = size }
}

extension QCow2Image {
  /// Creates the image at `path` (replacing any file there) and returns it open for writing.
  @discardableResult
  public static func create(at path: String, options: QCow2CreateOptions) throws(DiskImageError) -> QCow2Image {
    func invalid(_ reason: String) -> DiskImageError { .invalid(path: path, reason: reason) }
    let clusterBits = UInt32(options.clusterSize.trailingZeroBitCount)
    guard options.clusterSize.nonzeroBitCount == 1, (9...21).contains(clusterBits) else {
      throw invalid("cluster size \(options.clusterSize) must be a power of two from 512 to 2 MiB")
    }
    let version: UInt32
    switch options.compat {
    case "1.1", "v3": version = 3
    case "0.10", "v2": version = 2
    default: throw invalid("compat '\(options.compat)' must be 0.10 or 1.1")
    }
    guard options.refcountBits.nonzeroBitCount == 1, options.refcountBits <= 64 else {
      throw invalid("refcount_bits \(options.refcountBits) must be a power of two up to 64")
    }
    guard version == 3 || options.refcountBits == 16 else { throw invalid("compat 0.10 needs refcount_bits 16") }
    guard version == 3 || !options.lazyRefcounts else { throw invalid("lazy_refcounts needs compat 1.1") }
    guard options.size <= (1 << 61) else { throw invalid("size \(options.size) is larger than 2^61") }
    if let backing = options.backingFile, backing.utf8.count > 1023 {
      throw invalid("backing file name longer than 1023 bytes")
    }

    let clusterSize = options.clusterSize
    let l1Entries = QCow2Header.l1EntriesNeeded(size: options.size, clusterBits: clusterBits)
    let l1Clusters = max(1, (l1Entries * 8 + clusterSize - 1) / clusterSize)
    var header = QCow2Header(
      version: version, backingFileOffset: 0, backingFileSize: 0, clusterBits: clusterBits, size: options.size,
      cryptMethod: 0, l1Size: UInt32(l1Entries), l1TableOffset: 3 * clusterSize, refcountTableOffset: clusterSize,
      refcountTableClusters: 1, snapshotCount: 0, snapshotsOffset: 0)
    if version == 3 {
      header.refcountOrder = UInt32(options.refcountBits.trailingZeroBitCount)
      header.headerLength = 112
      header.compatibleFeatures = options.lazyRefcounts ? QCow2Header.Compatible.lazyRefcounts : 0
    }
    header.backingFile = options.backingFile
    header.backingFormat = options.backingFormat?.rawValue
    var first = header.encoded()
    guard first.count <= Int(clusterSize) else { throw invalid("the header does not fit in one cluster") }
    first += [UInt8](repeating: 0, count: Int(clusterSize) - first.count)

    let file = try ImageFile.create(path: path)
    try file.write(first, at: 0)
    // Refcount table: one entry, the block in cluster 2; the block counts clusters 0–2.
    try file.write(BigEndian.bytes(2 * clusterSize), at: clusterSize)
    try file.truncate(to: (3 + l1Clusters) * clusterSize)
    var refcounts = try QCow2Refcounts(file: file, header: header)
    for cluster in 0..<(3 + l1Clusters) { try refcounts.setRefcount(cluster, to: 1) }
    try file.orderingPoint()
    // Opened on the same (locked) file, with the backing chain resolved for copy-on-write.
    let written = try QCow2Header.read(from: file)
    let backing = try written.backingFile.map { name throws(DiskImageError) in
      try DiskImage.open(
        DiskImage.resolve(backing: name, of: path), format: written.backingFormat.flatMap(DiskImageFormat.init))
    }
    let image = try QCow2Image(file: file, header: written, backing: backing)
    if options.preallocation != .off {
      guard options.backingFile == nil else { throw invalid("preallocation and a backing file do not go together") }
      try image.preallocate(options.preallocation)
    }
    return image
  }
}

extension QCow2Header {
  /// The header and its extensions as bytes (what `read(from:)` parses).
  func encoded() -> [UInt8] {
    var bytes: [UInt8] = []
    func put<T: FixedWidthInteger>(_ value: T) { bytes += BigEndian.bytes(value) }
    put(UInt32(Self.magic))
    put(UInt32(version))
    put(UInt64(0))  // backing file offset, patched below
    put(UInt32(0))
    put(UInt32(clusterBits))
    put(UInt64(size))
    put(UInt32(cryptMethod))
    put(UInt32(l1Size))
    put(UInt64(l1TableOffset))
    put(UInt64(refcountTableOffset))
    put(UInt32(refcountTableClusters))
    put(UInt32(snapshotCount))
    put(UInt64(snapshotsOffset))
    if version == 3 {
      put(UInt64(incompatibleFeatures))
      put(UInt64(compatibleFeatures))
      put(UInt64(autoclearFeatures))
      put(UInt32(refcountOrder))
      put(UInt32(headerLength))
      bytes += [compressionType] + [UInt8](repeating: 0, count: Int(headerLength) - 105)
    }
    func extensionBlock(_ type: UInt32, _ data: [UInt8]) {
      put(UInt32(type))
      put(UInt32(data.count))
      bytes += data + [UInt8](repeating: 0, count: (8 - data.count % 8) % 8)
    }
    if let backingFormat { extensionBlock(0xE279_2ACA, Array(backingFormat.utf8)) }
    if version == 3 {
      let names: [(UInt8, UInt8, String)] = [
        (0, 0, "dirty bit"), (0, 1, "corrupt bit"), (0, 2, "external data file"), (0, 3, "compression type"),
        (0, 4, "extended L2 entries"), (1, 0, "lazy refcounts"), (2, 0, "bitmaps"), (2, 1, "raw external data"),
      ]
      extensionBlock(
        0x6803_F857,
        names.flatMap { type, bit, name in
          [type, bit] + Array(name.utf8) + [UInt8](repeating: 0, count: 46 - name.utf8.count)
        })
    }
    put(UInt32(0))  // end of extensions
    put(UInt32(0))
    if let backingFile {
      let offset = UInt64(bytes.count)
      bytes += Array(backingFile.utf8)
      bytes.replaceSubrange(8..<16, with: BigEndian.bytes(offset))
      bytes.replaceSubrange(
        16..<20, with: BigEndian.bytes(UInt32(backingFile.utf8.count)))
    }
    return bytes
  }
}
