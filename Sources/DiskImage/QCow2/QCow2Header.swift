import Checked

/// The qcow2 header and its extensions (QEMU `docs/interop/qcow2.txt`), parsed from
/// untrusted bytes: every field is checked against the format's limits and the file's
/// length before anything is allocated or read from it.
public struct QCow2Header: Sendable, Equatable {
  public static let magic: UInt32 = 0x5146_49FB  // "QFI\xfb"
  /// The largest L1 table QEMU accepts (32 MiB), and so do we.
  static let maximumL1Bytes: UInt64 = 32 << 20
  /// The largest refcount table QEMU accepts (8 MiB).
  static let maximumRefcountTableBytes: UInt64 = 8 << 20
  static let maximumSnapshots: UInt32 = 65536

  public var version: UInt32
  public var backingFileOffset: UInt64
  public var backingFileSize: UInt32
  public var clusterBits: UInt32
  public var size: UInt64
  public var cryptMethod: UInt32
  public var l1Size: UInt32
  public var l1TableOffset: UInt64
  public var refcountTableOffset: UInt64
  public var refcountTableClusters: UInt32
  public var snapshotCount: UInt32
  public var snapshotsOffset: UInt64
  public var incompatibleFeatures: UInt64 = 0
  public var compatibleFeatures: UInt64 = 0
  public var autoclearFeatures: UInt64 = 0
  public var refcountOrder: UInt32 = 4
  public var headerLength: UInt32 = 72
  public var compressionType: UInt8 = 0

  /// Header extensions.
  public var backingFormat: String?
  /// Feature names from the feature-name table: (type 0 incompatible / 1 compatible / 2 autoclear, bit) → name.
  public var featureNames: [FeatureKey: String] = [:]
  /// The backing file name as stored.
  public var backingFile: String?

  /// A feature bit's place.
  public struct FeatureKey: Hashable, Sendable {
    public var type: UInt8
    public var bit: UInt8
  }

  public enum Incompatible {
    public static let dirty: UInt64 = 1 << 0
    public static let corrupt: UInt64 = 1 << 1
    public static let externalDataFile: UInt64 = 1 << 2
    public static let compressionType: UInt64 = 1 << 3
    public static let extendedL2: UInt64 = 1 << 4
  }
  public enum Compatible {
    public static let lazyRefcounts: UInt64 = 1 << 0
  }

  public var clusterSize: UInt64 { 1 << UInt64(clusterBits) }
  /// Entries in one L2 table.
  public var l2Entries: UInt64 { clusterSize / 8 }
  public var refcountBits: UInt32 { 1 << refcountOrder }
  public var isDirty: Bool { incompatibleFeatures & Incompatible.dirty != 0 }
  public var isCorrupt: Bool { incompatibleFeatures & Incompatible.corrupt != 0 }
  public var lazyRefcounts: Bool { compatibleFeatures & Compatible.lazyRefcounts != 0 }

  /// The L1 entries needed to map `size` bytes with this cluster size.
  public static func l1EntriesNeeded(size: UInt64, clusterBits: UInt32) -> UInt64 {
    let bytesPerL2 = UInt64(1) << (2 * UInt64(clusterBits) - 3)
    return size / bytesPerL2 + (size % bytesPerL2 == 0 ? 0 : 1)
  }

  /// Parses and checks the header at the start of `file`. `forCheck` (an image opened by
  /// `check`) accepts tables that reach past the end of the file, for check to report.
  static func read(from file: ImageFile, forCheck: Bool = false) throws(DiskImageError) -> QCow2Header {
    let path = file.path
    let fileLength = file.length
    func invalid(_ reason: String) -> DiskImageError { .invalid(path: path, reason: reason) }
    guard fileLength >= 72 else { throw invalid("too short for a qcow2 header (\(fileLength) bytes)") }
    // Header and extensions live in the first cluster; 64 KiB covers every extension QEMU writes.
    let bytes = try file.read(count: 65536, at: 0)
    let reader = BigEndianReader(bytes)
    guard reader.u32(0) == magic else { throw invalid("not a qcow2 image (no QFI\\xfb magic)") }
    var header = QCow2Header(
      version: reader.u32(4), backingFileOffset: reader.u64(8), backingFileSize: reader.u32(16),
      clusterBits: reader.u32(20), size: reader.u64(24), cryptMethod: reader.u32(32), l1Size: reader.u32(36),
      l1TableOffset: reader.u64(40), refcountTableOffset: reader.u64(48), refcountTableClusters: reader.u32(56),
      snapshotCount: reader.u32(60), snapshotsOffset: reader.u64(64))
    guard header.version == 2 || header.version == 3 else {
      throw DiskImageError.unsupported(path: path, feature: "qcow2 version \(header.version)")
    }
    guard (9...21).contains(header.clusterBits) else {
      throw invalid("cluster_bits \(header.clusterBits) is outside 9…21")
    }
    if header.version == 3 {
      header.incompatibleFeatures = reader.u64(72)
      header.compatibleFeatures = reader.u64(80)
      header.autoclearFeatures = reader.u64(88)
      header.refcountOrder = reader.u32(96)
      header.headerLength = reader.u32(100)
      guard header.headerLength >= 104, header.headerLength % 8 == 0 || header.headerLength == 104,
        UInt64(header.headerLength) <= header.clusterSize
      else { throw invalid("header_length \(header.headerLength) is invalid") }
      if header.headerLength > 104 { header.compressionType = bytes[104] }
      guard header.refcountOrder <= 6 else { throw invalid("refcount_order \(header.refcountOrder) is above 6") }
    }
    let clusterSize = header.clusterSize
    guard header.size <= (1 << 61) else { throw invalid("virtual size \(header.size) is larger than 2^61") }
    if header.cryptMethod != 0 {
      throw DiskImageError.unsupported(path: path, feature: "encryption (crypt_method \(header.cryptMethod))")
    }
    // Extensions come before anything that names unknown features, so their names can be used.
    try header.readExtensions(bytes: bytes, file: file)
    try header.checkFeatures(path: path)
    // L1 table, refcount table, snapshot table: checked as QEMU checks them (aligned, within
    // its size limit, addressable), and — unless the image is opened to be checked and
    // repaired — inside the file, since a table past the end would be overwritten by the
    // clusters allocated next.
    let needed = l1EntriesNeeded(size: header.size, clusterBits: header.clusterBits)
    guard UInt64(header.l1Size) >= needed else {
      throw invalid("L1 table has \(header.l1Size) entries; \(needed) are needed for \(header.size) bytes")
    }
    func table(_ what: String, offset: UInt64, length: UInt64, limit: UInt64) throws(DiskImageError) {
      guard length <= limit else { throw invalid("\(what) of \(length) bytes is larger than \(limit >> 20) MiB") }
      guard offset % clusterSize == 0, offset.fits(length: length, within: UInt64(Int64.max)) else {
        throw invalid(
          "\(what) offset 0x\(String(offset, radix: 16)) is invalid (not cluster-aligned, or beyond any file)")
      }
      guard forCheck || length == 0 || offset.fits(length: length, within: fileLength) else {
        throw invalid(
          "\(what) (offset \(offset), \(length) bytes) reaches past the end of the file (\(fileLength)); "
            + "'skvm img check -r all' may repair it")
      }
    }
    try table("L1 table", offset: header.l1TableOffset, length: UInt64(header.l1Size) * 8, limit: maximumL1Bytes)
    guard forCheck || header.refcountTableClusters > 0 else { throw invalid("the image has no refcount table") }
    try table(
      "refcount table", offset: header.refcountTableOffset, length: UInt64(header.refcountTableClusters) * clusterSize,
      limit: maximumRefcountTableBytes)
    guard forCheck || header.refcountTableOffset != 0 else { throw invalid("the refcount table overlaps the header") }
    guard forCheck || header.l1Size == 0 || header.l1TableOffset != 0 else {
      throw invalid("the L1 table overlaps the header")
    }
    guard header.snapshotCount <= maximumSnapshots else {
      throw invalid("\(header.snapshotCount) snapshots is more than \(maximumSnapshots)")
    }
    try table(
      "snapshot table", offset: header.snapshotsOffset, length: UInt64(header.snapshotCount) * 40,
      limit: UInt64(maximumSnapshots) * 40)
    if header.backingFileOffset != 0 {
      guard header.backingFileSize > 0, header.backingFileSize <= 1023,
        header.backingFileOffset.fits(length: UInt64(header.backingFileSize), within: min(clusterSize, fileLength))
      else {
        throw invalid(
          "backing file name (offset \(header.backingFileOffset), \(header.backingFileSize) bytes) is invalid")
      }
      let name = try file.read(count: Int(header.backingFileSize), at: header.backingFileOffset)
      header.backingFile = String(decoding: name, as: UTF8.self)
    }
    return header
  }

  private mutating func readExtensions(bytes: [UInt8], file: ImageFile) throws(DiskImageError) {
    var offset = Int(version == 3 ? headerLength : 72)
    // Extensions end where the backing file name starts, or with the first cluster (QEMU's rule).
    let end = backingFileOffset != 0 ? min(backingFileOffset, clusterSize) : clusterSize
    let limit = Int(min(end, UInt64(bytes.count)))
    let reader = BigEndianReader(bytes)
    while offset + 8 <= limit {
      let type = reader.u32(offset)
      let length = Int(reader.u32(offset + 4))
      let start = offset + 8
      guard length <= limit - start else {
        throw .invalid(
          path: file.path,
          reason: "header extension 0x\(String(type, radix: 16)) (\(length) bytes) runs past the end of the header area"
        )
      }
      if type == 0 { return }
      try readExtension(type: type, data: Array(bytes[start..<start + length]), path: file.path)
      offset = start + ((length + 7) & ~7)
    }
  }

  private mutating func readExtension(type: UInt32, data: [UInt8], path: String) throws(DiskImageError) {
    switch type {
    case 0xE279_2ACA:
      backingFormat = String(decoding: data, as: UTF8.self)
    case 0x6803_F857:
      for entry in stride(from: 0, to: data.count - 47, by: 48) {
        let name = data[(entry + 2)..<(entry + 48)].prefix { $0 != 0 }
        featureNames[FeatureKey(type: data[entry], bit: data[entry + 1])] = String(decoding: name, as: UTF8.self)
      }
    case 0x0537_BE77:
      throw .unsupported(path: path, feature: "full disk encryption")
    case 0x4441_5441:
      throw .unsupported(path: path, feature: "an external data file")
    default:
      break  // bitmaps and unknown extensions: safe to ignore for reading
    }
  }

  private func checkFeatures(path: String) throws(DiskImageError) {
    if incompatibleFeatures & Incompatible.externalDataFile != 0 {
      throw .unsupported(path: path, feature: "an external data file")
    }
    if incompatibleFeatures & Incompatible.extendedL2 != 0 {
      throw .unsupported(path: path, feature: "extended L2 entries (subclusters)")
    }
    if incompatibleFeatures & Incompatible.compressionType != 0 || compressionType != 0 {
      throw .unsupported(
        path: path, feature: "compression type \(compressionType == 1 ? "zstd" : "\(compressionType)")")
    }
    let known = Incompatible.dirty | Incompatible.corrupt
    let unknown = incompatibleFeatures & ~known
    if unknown != 0 {
      let bit = UInt8(unknown.trailingZeroBitCount)
      let name = featureNames[FeatureKey(type: 0, bit: bit)].map { "'\($0)'" } ?? "bit \(bit)"
      throw .unsupported(path: path, feature: "the unknown incompatible feature \(name)")
    }
  }
}

/// Big-endian encoding of the integers qcow2 stores.
enum BigEndian {
  static func bytes<T: FixedWidthInteger>(_ value: T) -> [UInt8] {
    withUnsafeBytes(of: value.bigEndian) { Array($0) }
  }
}

/// Big-endian field access into a byte array; out-of-range reads give 0 (callers check lengths).
struct BigEndianReader {
  let bytes: [UInt8]
  init(_ bytes: [UInt8]) { self.bytes = bytes }

  func u64(_ offset: Int) -> UInt64 {
    guard offset >= 0, offset + 8 <= bytes.count else { return 0 }
    return (0..<8).reduce(0) { $0 << 8 | UInt64(bytes[offset + $1]) }
  }
  func u32(_ offset: Int) -> UInt32 {
    guard offset >= 0, offset + 4 <= bytes.count else { return 0 }
    return (0..<4).reduce(0) { $0 << 8 | UInt32(bytes[offset + $1]) }
  }
  func u16(_ offset: Int) -> UInt16 {
    guard offset >= 0, offset + 2 <= bytes.count else { return 0 }
    return UInt16(bytes[offset]) << 8 | UInt16(bytes[offset + 1])
  }
}
