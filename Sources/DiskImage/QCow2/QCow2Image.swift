import Synchronization

/// A qcow2 image (versions 2 and 3), read through its L1/L2 tables: unallocated clusters
/// come from the backing file (or read as zeros), zero clusters read as zeros, compressed
/// clusters are inflated. Every table and data offset is checked against the file before
/// use; L2 tables are cached within a fixed budget.
public final class QCow2Image: BlockBackend, @unchecked Sendable {
  public let path: String
  public let header: QCow2Header
  public let isReadOnly = true
  public var size: UInt64 { header.size }
  /// The image this one reads unallocated clusters from, if any.
  public let backing: (any BlockBackend)?
  /// Bytes of L2 tables kept in memory at most.
  public static let l2CacheBudget = 16 << 20

  let file: ImageFile
  private let l1: [UInt64]
  private let l2Cache: Mutex<L2Cache>

  /// Bits 9–55 of L1/L2 entries: a host offset.
  static let offsetMask: UInt64 = 0x00FF_FFFF_FFFF_FE00
  static let copiedFlag: UInt64 = 1 << 63
  static let compressedFlag: UInt64 = 1 << 62
  static let zeroFlag: UInt64 = 1

  /// Opens `path`; `backing` is the already-opened backing image (see `DiskImage.open`).
  init(file: ImageFile, header: QCow2Header, backing: (any BlockBackend)?) throws(DiskImageError) {
    self.path = file.path
    self.file = file
    self.header = header
    self.backing = backing
    let raw = try file.read(count: Int(header.l1Size) * 8, at: header.l1TableOffset)
    let reader = BigEndianReader(raw)
    l1 = (0..<Int(header.l1Size)).map { reader.u64($0 * 8) }
    let tables = max(1, Self.l2CacheBudget / Int(header.clusterSize))
    l2Cache = Mutex(L2Cache(capacity: tables))
  }

  public func read(into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64) throws(DiskImageError) {
    try checkRange(offset, buffer.count)
    var done = 0
    while done < buffer.count {
      let position = offset + UInt64(done)
      let inCluster = Int(position & (header.clusterSize - 1))
      let count = min(buffer.count - done, Int(header.clusterSize) - inCluster)
      let piece = UnsafeMutableRawBufferPointer(rebasing: buffer[done..<done + count])
      try readWithinCluster(piece, at: position, inCluster: inCluster)
      done += count
    }
  }

  /// What a guest cluster maps to.
  enum Mapping: Equatable {
    case unallocated
    case zero
    case data(hostOffset: UInt64)
    case compressed(hostOffset: UInt64, length: Int)
  }

  func mapping(of position: UInt64) throws(DiskImageError) -> Mapping {
    let clusterBits = UInt64(header.clusterBits)
    let l2Bits = clusterBits - 3
    let l1Index = Int(position >> (clusterBits + l2Bits))
    guard l1Index < l1.count else { return .unallocated }
    let l2Offset = l1[l1Index] & Self.offsetMask
    if l2Offset == 0 { return .unallocated }
    let table = try l2Table(at: l2Offset)
    let entry = table[Int((position >> clusterBits) & (header.l2Entries - 1))]
    if entry & Self.compressedFlag != 0 {
      let offsetBits = 62 - (clusterBits - 8)
      let hostOffset = entry & ((1 << offsetBits) - 1)
      let sectors = (entry & ~Self.copiedFlag & ~Self.compressedFlag) >> offsetBits
      let length = Int((sectors + 1) * 512 - (hostOffset & 511))
      return .compressed(hostOffset: hostOffset, length: length)
    }
    if header.version >= 3 && entry & Self.zeroFlag != 0 { return .zero }
    let hostOffset = entry & Self.offsetMask
    if hostOffset == 0 { return .unallocated }
    guard hostOffset & (header.clusterSize - 1) == 0 else {
      throw .invalid(
        path: path, reason: "data cluster offset 0x\(String(hostOffset, radix: 16)) is not cluster-aligned")
    }
    return .data(hostOffset: hostOffset)
  }

  private func readWithinCluster(
    _ buffer: UnsafeMutableRawBufferPointer, at position: UInt64, inCluster: Int
  ) throws(DiskImageError) {
    switch try mapping(of: position) {
    case .unallocated:
      if let backing, position < backing.size {
        let available = Int(min(UInt64(buffer.count), backing.size - position))
        try backing.read(into: UnsafeMutableRawBufferPointer(rebasing: buffer[0..<available]), at: position)
        if available < buffer.count {
          UnsafeMutableRawBufferPointer(rebasing: buffer[available...]).initializeMemory(as: UInt8.self, repeating: 0)
        }
      } else {
        buffer.initializeMemory(as: UInt8.self, repeating: 0)
      }
    case .zero:
      buffer.initializeMemory(as: UInt8.self, repeating: 0)
    case .data(let hostOffset):
      try file.read(into: buffer, at: hostOffset + UInt64(inCluster))
    case .compressed(let hostOffset, let length):
      guard length > 0, length <= Int(header.clusterSize) * 2 + 512 else {
        throw .invalid(path: path, reason: "compressed cluster at \(hostOffset) has an absurd length \(length)")
      }
      let compressed = try file.read(count: length, at: hostOffset)
      guard let cluster = Inflate.raw(compressed, outputSize: Int(header.clusterSize)) else {
        throw .invalid(path: path, reason: "compressed cluster at host offset \(hostOffset) does not inflate")
      }
      cluster.withUnsafeBytes { source in
        buffer.copyMemory(from: UnsafeRawBufferPointer(rebasing: source[inCluster..<inCluster + buffer.count]))
      }
    }
  }

  private func l2Table(at offset: UInt64) throws(DiskImageError) -> [UInt64] {
    if let table = l2Cache.withLock({ $0.lookup(offset) }) { return table }
    guard offset & (header.clusterSize - 1) == 0 else {
      throw .invalid(path: path, reason: "L2 table offset 0x\(String(offset, radix: 16)) is not cluster-aligned")
    }
    let (end, overflow) = offset.addingReportingOverflow(header.clusterSize)
    guard !overflow, end <= file.length else {
      throw .invalid(path: path, reason: "L2 table at 0x\(String(offset, radix: 16)) lies past the end of the file")
    }
    let raw = try file.read(count: Int(header.clusterSize), at: offset)
    let reader = BigEndianReader(raw)
    let table = (0..<Int(header.l2Entries)).map { reader.u64($0 * 8) }
    l2Cache.withLock { $0.insert(table, at: offset) }
    return table
  }
}

/// A bounded cache of L2 tables keyed by host offset, evicting the least recently used.
struct L2Cache {
  let capacity: Int
  private var tables: [UInt64: (table: [UInt64], used: UInt64)] = [:]
  private var clock: UInt64 = 0

  init(capacity: Int) { self.capacity = capacity }

  mutating func lookup(_ offset: UInt64) -> [UInt64]? {
    guard let entry = tables[offset] else { return nil }
    clock += 1
    tables[offset] = (entry.table, clock)
    return entry.table
  }

  mutating func insert(_ table: [UInt64], at offset: UInt64) {
    if tables.count >= capacity, let oldest = tables.min(by: { $0.value.used < $1.value.used })?.key {
      tables.removeValue(forKey: oldest)
    }
    clock += 1
    tables[offset] = (table, clock)
  }
}
