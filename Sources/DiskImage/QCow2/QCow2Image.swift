import CSystemCalls
import Glibc

/// A qcow2 image (versions 2 and 3).
///
/// Reads go through the L1/L2 tables: unallocated clusters come from the backing file
/// (or read as zeros), zero clusters read as zeros, compressed clusters are inflated.
/// Writes allocate clusters copy-on-write (from the backing file, a compressed or zero
/// cluster, or a cluster shared with a snapshot) and update metadata in crash-safe order:
/// a new cluster's refcount is durable before any table points to it, and an old
/// cluster's refcount drops only after nothing points to it — a crash leaks clusters at
/// worst. Every table and data offset is checked against the file before use.
public final class QCow2Image: BlockBackend, @unchecked Sendable {
  public let path: String
  public let isReadOnly: Bool
  /// The image this one reads unallocated clusters from, if any.
  public let backing: (any BlockBackend)?
  /// Bytes of L2 tables kept in memory at most.
  public static let l2CacheBudget = 16 << 20

  let file: ImageFile
  private let lock = MetadataLock()
  /// Guarded by `lock`.
  private var metadata: State

  struct State {
    var header: QCow2Header
    var l1: [UInt64]
    var l2Cache: L2Cache
    var refcounts: QCow2Refcounts?
  }

  /// Bits 9–55 of L1/L2 entries: a host offset.
  static let offsetMask: UInt64 = 0x00FF_FFFF_FFFF_FE00
  static let copiedFlag: UInt64 = 1 << 63
  static let compressedFlag: UInt64 = 1 << 62
  static let zeroFlag: UInt64 = 1

  /// Opens an image whose header has been read; `backing` is its opened backing image.
  /// `forCheck` opens it for `check` alone: a corrupt or dirty image is left as it is.
  init(file: ImageFile, header: QCow2Header, backing: (any BlockBackend)?, forCheck: Bool = false)
    throws(DiskImageError)
  {
    self.path = file.path
    self.file = file
    self.backing = backing
    self.isReadOnly = !file.writable
    let l1 = try file.readEntries(count: Int(header.l1Size), at: header.l1TableOffset)
    let tables = max(1, Self.l2CacheBudget / Int(header.clusterSize))
    var refcounts: QCow2Refcounts?
    if file.writable {
      if header.isCorrupt && !forCheck {
        throw .invalid(path: file.path, reason: "the image is marked corrupt; repair it with 'qemu-img check -r all'")
      }

      refcounts = try QCow2Refcounts(file: file, header: header)
    }
    metadata = State(header: header, l1: l1, l2Cache: L2Cache(capacity: tables), refcounts: refcounts)
    metadata.refcounts?.tableMoved = Self.headerFollowsRefcountTable(file)
    // Lazy refcounts left by a crash: the stored counts may be too low to allocate safely,
    // so they are rebuilt from the tables before anything is written (as QEMU does on open).
    if file.writable && header.isDirty && !forCheck {
      _ = try check(repair: .all)
      try file.write(BigEndian.bytes(header.incompatibleFeatures & ~QCow2Header.Incompatible.dirty), at: 72)
      try file.flush()
      metadata.header.incompatibleFeatures &= ~QCow2Header.Incompatible.dirty
    }
  }

  /// What keeps the header's refcount table offset and size right when the table moves.
  static func headerFollowsRefcountTable(_ file: ImageFile) -> (UInt64, UInt32) throws(DiskImageError) -> Void {
    { offset, clusters throws(DiskImageError) in
      try file.write(BigEndian.bytes(offset) + BigEndian.bytes(clusters), at: 48)
    }
  }

  /// Runs `body` with the metadata, holding the lock.
  func withMetadata<T>(_ body: (inout State) throws(DiskImageError) -> T) throws(DiskImageError) -> T {
    lock.lock()
    defer { lock.unlock() }
    return try body(&metadata)
  }

  /// The header as it is now (the refcount table may have moved since opening).
  public var header: QCow2Header {
    lock.lock()
    defer { lock.unlock() }
    return metadata.header
  }
  public var size: UInt64 { header.size }

  // MARK: Reading

  public func read(into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64) throws(DiskImageError) {
    try checkRange(offset, buffer.count)
    let clusterSize = header.clusterSize
    var done = 0
    while done < buffer.count {
      let position = offset + UInt64(done)
      let inCluster = Int(position & (clusterSize - 1))
      let count = min(buffer.count - done, Int(clusterSize) - inCluster)
      let piece = UnsafeMutableRawBufferPointer(rebasing: buffer[done..<done + count])
      let mapping = try withMetadata { state throws(DiskImageError) in try Self.mapping(of: position, in: &state, file)
      }
      try read(piece, of: mapping, at: position, inCluster: inCluster)
      done += count
    }
  }

  /// What a guest cluster maps to.
  enum Mapping: Equatable {
    case unallocated
    case zero
    case data(hostOffset: UInt64, exclusive: Bool)
    case compressed(hostOffset: UInt64, length: Int)
  }

  /// True when the image itself has nothing for the cluster at `position` (it reads from the backing file).
  public func isUnallocated(at position: UInt64) throws(DiskImageError) -> Bool {
    try mapping(of: position) == .unallocated
  }

  func mapping(of position: UInt64) throws(DiskImageError) -> Mapping {
    try withMetadata { state throws(DiskImageError) in try Self.mapping(of: position, in: &state, file) }
  }

  private static func mapping(of position: UInt64, in state: inout State, _ file: ImageFile) throws(DiskImageError)
    -> Mapping
  {
    let header = state.header
    let clusterBits = UInt64(header.clusterBits)
    let l1Index = Int(position >> (2 * clusterBits - 3))
    guard l1Index < state.l1.count else { return .unallocated }
    let l2Offset = state.l1[l1Index] & offsetMask
    if l2Offset == 0 { return .unallocated }
    let table = try l2Table(at: l2Offset, in: &state, file)
    let entry = table[Int((position >> clusterBits) & (header.l2Entries - 1))]
    return try decode(entry, header: header, path: file.path)
  }

  static func decode(_ entry: UInt64, header: QCow2Header, path: String) throws(DiskImageError) -> Mapping {
    let clusterBits = UInt64(header.clusterBits)
    if entry & compressedFlag != 0 {
      let offsetBits = 62 - (clusterBits - 8)
      let hostOffset = entry & ((1 << offsetBits) - 1)
      let sectors = (entry & ~copiedFlag & ~compressedFlag) >> offsetBits
      let length = Int((sectors + 1) * 512 - (hostOffset & 511))
      return .compressed(hostOffset: hostOffset, length: length)
    }
    if header.version >= 3 && entry & zeroFlag != 0 { return .zero }
    let hostOffset = entry & offsetMask
    if hostOffset == 0 { return .unallocated }
    guard hostOffset & (header.clusterSize - 1) == 0 else {
      throw .invalid(
        path: path, reason: "data cluster offset 0x\(String(hostOffset, radix: 16)) is not cluster-aligned")
    }
    return .data(hostOffset: hostOffset, exclusive: entry & copiedFlag != 0)
  }

  func read(
    _ buffer: UnsafeMutableRawBufferPointer, of mapping: Mapping, at position: UInt64, inCluster: Int
  ) throws(DiskImageError) {
    switch mapping {
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
    case .data(let hostOffset, _):
      try file.read(into: buffer, at: hostOffset + UInt64(inCluster))
    case .compressed(let hostOffset, let length):
      let clusterSize = Int(header.clusterSize)
      guard length > 0, length <= clusterSize * 2 + 512 else {
        throw .invalid(path: path, reason: "compressed cluster at \(hostOffset) has an absurd length \(length)")
      }
      let compressed = try file.read(count: length, at: hostOffset)
      guard let cluster = RawDeflate.decompress(compressed, outputSize: clusterSize) else {
        throw .invalid(path: path, reason: "compressed cluster at host offset \(hostOffset) does not inflate")
      }
      cluster.withUnsafeBytes { source in
        buffer.copyMemory(from: UnsafeRawBufferPointer(rebasing: source[inCluster..<inCluster + buffer.count]))
      }
    }
  }

  static func l2Table(at offset: UInt64, in state: inout State, _ file: ImageFile) throws(DiskImageError)
    -> [UInt64]
  {
    if let table = state.l2Cache.lookup(offset) { return table }
    let clusterSize = state.header.clusterSize
    guard offset & (clusterSize - 1) == 0 else {
      throw .invalid(path: file.path, reason: "L2 table offset 0x\(String(offset, radix: 16)) is not cluster-aligned")
    }
    let (end, overflow) = offset.addingReportingOverflow(clusterSize)
    guard !overflow, end <= file.length else {
      throw .invalid(
        path: file.path, reason: "L2 table at 0x\(String(offset, radix: 16)) lies past the end of the file")
    }
    let table = try file.readEntries(count: Int(state.header.l2Entries), at: offset)
    state.l2Cache.insert(table, at: offset)
    return table
  }

  // MARK: Writing

  /// Writes `bytes` at guest offset `offset`, allocating clusters as needed.
  public func write(_ bytes: UnsafeRawBufferPointer, at offset: UInt64) throws(DiskImageError) {
    guard !isReadOnly else { throw .invalid(path: path, reason: "the image is open read-only") }
    try checkRange(offset, bytes.count)
    let clusterSize = header.clusterSize
    var done = 0
    while done < bytes.count {
      let position = offset + UInt64(done)
      let inCluster = Int(position & (clusterSize - 1))
      let count = min(bytes.count - done, Int(clusterSize) - inCluster)
      if inCluster == 0 && count == Int(clusterSize) {
        let written = try withMetadata { state throws(DiskImageError) in
          try writeFreshRun(UnsafeRawBufferPointer(rebasing: bytes[done...]), at: position, in: &state)
        }
        if written > 0 {
          done += written
          continue
        }
      }
      let piece = UnsafeRawBufferPointer(rebasing: bytes[done..<done + count])
      try withMetadata { state throws(DiskImageError) in
        try writeWithinCluster(piece, at: position, inCluster: inCluster, in: &state)
      }
      done += count
    }
  }

  /// Writes whole clusters starting at cluster-aligned `position` whose old contents do not
  /// matter (unallocated with no backing data, or zero) as one run: contiguous clusters, one
  /// data write, one write of the L2 entries. Returns the bytes written (0: not applicable).
  func writeFreshRun(_ bytes: UnsafeRawBufferPointer, at position: UInt64, in state: inout State)
    throws(DiskImageError) -> Int
  {
    let header = state.header
    let clusterSize = Int(header.clusterSize)
    let clusterBits = UInt64(header.clusterBits)
    let l1Index = Int(position >> (2 * clusterBits - 3))
    let firstSlot = Int((position >> clusterBits) & (header.l2Entries - 1))
    let l2Offset = try ownedL2Table(l1Index, in: &state)
    var table = try Self.l2Table(at: l2Offset, in: &state, file)
    var run = 0
    while run < bytes.count / clusterSize && firstSlot + run < table.count {
      let entry = table[firstSlot + run]
      let clusterStart = position + UInt64(run * clusterSize)
      let replaceable =
        entry == 0 ? backing.map { clusterStart >= $0.size } ?? true : entry == Self.zeroFlag && header.version >= 3
      guard replaceable else { break }
      run += 1
    }
    guard run > 1 else { return 0 }
    guard var refcounts = state.refcounts else { throw .invalid(path: path, reason: "the image is open read-only") }
    let host = try refcounts.allocate(run)
    state.refcounts = refcounts
    try file.orderingPoint()
    try file.write(UnsafeRawBufferPointer(rebasing: bytes[0..<run * clusterSize]), at: host)
    for index in 0..<run { table[firstSlot + index] = (host + UInt64(index * clusterSize)) | Self.copiedFlag }
    try file.write(
      table[firstSlot..<firstSlot + run].flatMap(BigEndian.bytes), at: l2Offset + UInt64(firstSlot) * 8)
    state.l2Cache.insert(table, at: l2Offset)
    return run * clusterSize
  }

  /// How metadata updates are ordered. `.powerLoss` (the default) syncs the file between
  /// dependent updates, so even a power cut leaves at worst leaked clusters; `.processCrash`
  /// only keeps their order — enough when the process dies but the host does not, and much
  /// faster for allocating writes (qemu-img's cache=unsafe/writeback); `flush()` still syncs.
  public enum MetadataOrdering: Sendable {
    case powerLoss
    case processCrash
  }

  /// The ordering in force; see `MetadataOrdering`.
  public var metadataOrdering: MetadataOrdering {
    get { file.syncsAtOrderingPoints ? .powerLoss : .processCrash }
    set { file.syncsAtOrderingPoints = newValue == .powerLoss }
  }

  /// The image's own lock (its backing files are shared-locked, which a destination shares).
  public func setLocked(_ locked: Bool) -> Bool { file.setLocked(locked) }

  public func close() {
    lock.lock()
    file.close()
    lock.unlock()
    backing?.close()
  }

  /// Makes everything written so far durable.
  public func flush() throws(DiskImageError) {
    try file.flush()
  }

  /// Starts writing what is dirty in the host's cache to the disk without waiting (a long
  /// write followed by `flush` overlaps the two). Advisory: nothing is promised durable.
  public func startWriteback() {
    _ = csys_start_writeback(file.fd, 0, 0)
  }

  /// Writes `piece` into the cluster holding guest `position`: in place when this image owns
  /// the cluster alone, else into a new cluster filled with the old contents and `piece`,
  /// written whole before the L2 entry points at it.
  func writeWithinCluster(
    _ piece: UnsafeRawBufferPointer, at position: UInt64, inCluster: Int, in state: inout State
  ) throws(DiskImageError) {
    let header = state.header
    let clusterBits = UInt64(header.clusterBits)
    let clusterStart = position & ~(header.clusterSize - 1)
    let l1Index = Int(position >> (2 * clusterBits - 3))
    let l2Index = Int((position >> clusterBits) & (header.l2Entries - 1))
    let l2Offset = try ownedL2Table(l1Index, in: &state)
    var table = try Self.l2Table(at: l2Offset, in: &state, file)
    let old = table[l2Index]
    let mapping = try Self.decode(old, header: header, path: path)
    if case .data(let host, exclusive: true) = mapping {
      try file.write(piece, at: host + UInt64(inCluster))
      return
    }

    guard var refcounts = state.refcounts else { throw .invalid(path: path, reason: "the image is open read-only") }
    let endBefore = file.length
    let host = try refcounts.allocate()
    state.refcounts = refcounts
    try file.orderingPoint()  // the refcount before anything points at the cluster
    // A cluster past the old end of the file has never been written: it reads as zeros, so
    // when the old contents were zeros too only the new bytes need writing.
    let oldIsZero: Bool
    switch mapping {
    case .zero: oldIsZero = true
    case .unallocated: oldIsZero = backing.map { clusterStart >= $0.size } ?? true
    default: oldIsZero = false
    }
    if host >= endBefore && oldIsZero {
      try file.write(piece, at: host + UInt64(inCluster))
      if file.length < host + header.clusterSize { try file.truncate(to: host + header.clusterSize) }
    } else {
      var contents = [UInt8](repeating: 0, count: Int(header.clusterSize))
      var failure: DiskImageError?
      contents.withUnsafeMutableBytes { buffer in
        do throws(DiskImageError) {
          if piece.count < buffer.count { try read(buffer, of: mapping, at: clusterStart, inCluster: 0) }
          UnsafeMutableRawBufferPointer(rebasing: buffer[inCluster..<inCluster + piece.count]).copyMemory(from: piece)
        } catch { failure = error }
      }
      if let failure { throw failure }
      try file.write(contents, at: host)
    }
    table[l2Index] = host | Self.copiedFlag
    try file.write(BigEndian.bytes(table[l2Index]), at: l2Offset + UInt64(l2Index) * 8)
    state.l2Cache.insert(table, at: l2Offset)
    try release(mapping, in: &state)
  }

  /// Places compressed data in a fresh cluster and points the L2 entry at it.
  func writeCompressedCluster(_ compressed: [UInt8], at position: UInt64, in state: inout State)
    throws(DiskImageError)
  {
    let header = state.header
    let clusterBits = UInt64(header.clusterBits)
    let l1Index = Int(position >> (2 * clusterBits - 3))
    let l2Index = Int((position >> clusterBits) & (header.l2Entries - 1))
    let l2Offset = try ownedL2Table(l1Index, in: &state)
    var table = try Self.l2Table(at: l2Offset, in: &state, file)
    guard var refcounts = state.refcounts else { throw .invalid(path: path, reason: "the image is open read-only") }
    let host = try refcounts.allocate()
    state.refcounts = refcounts
    try file.orderingPoint()
    try file.write(compressed, at: host)
    let offsetBits = 62 - (clusterBits - 8)
    let extraSectors = UInt64((compressed.count + 511) / 512 - 1)
    table[l2Index] = Self.compressedFlag | extraSectors << offsetBits | host
    try file.write(BigEndian.bytes(table[l2Index]), at: l2Offset + UInt64(l2Index) * 8)
    state.l2Cache.insert(table, at: l2Offset)
  }

  /// Makes the guest cluster at `position` unallocated (reading from the backing file
  /// again) and frees what it pointed at.
  func unmapCluster(at position: UInt64, in state: inout State) throws(DiskImageError) {
    let start = position & ~(state.header.clusterSize - 1)
    try unmapClusters(start..<start + 1, in: &state)
  }

  /// Makes every guest cluster that starts in `range` unallocated and frees what they
  /// pointed at: per L2 table, one write of the cleared entries, one ordering point, then
  /// the references dropped in one refcount batch.
  func unmapClusters(_ range: Range<UInt64>, in state: inout State) throws(DiskImageError) {
    let header = state.header
    let clusterBits = UInt64(header.clusterBits)
    let clusterSize = header.clusterSize
    var position = (range.lowerBound + clusterSize - 1) & ~(clusterSize - 1)
    while position < range.upperBound {
      let l1Index = Int(position >> (2 * clusterBits - 3))
      let firstSlot = Int((position >> clusterBits) & (header.l2Entries - 1))
      let slotsLeft = Int(header.l2Entries) - firstSlot
      let clustersLeft = Int((range.upperBound - position + clusterSize - 1) >> clusterBits)
      let slots = firstSlot..<firstSlot + min(slotsLeft, clustersLeft)
      position += UInt64(slots.count) << clusterBits
      guard l1Index < state.l1.count, state.l1[l1Index] & Self.offsetMask != 0 else { continue }
      let tableBefore = try Self.l2Table(at: state.l1[l1Index] & Self.offsetMask, in: &state, file)
      guard slots.contains(where: { tableBefore[$0] != 0 }) else { continue }
      let l2Offset = try ownedL2Table(l1Index, in: &state)
      var table = try Self.l2Table(at: l2Offset, in: &state, file)
      var released: [Mapping] = []
      var changed: Range<Int>?
      for slot in slots where table[slot] != 0 {
        let old = table[slot]
        let mapping = try Self.decode(old, header: header, path: path)
        if case .zero = mapping, old & Self.offsetMask != 0 {
          released.append(.data(hostOffset: old & Self.offsetMask, exclusive: false))
        } else {
          released.append(mapping)
        }
        table[slot] = 0
        changed = changed.map { $0.lowerBound..<slot + 1 } ?? slot..<slot + 1
      }
      guard let changed else { continue }
      try file.write(table[changed].flatMap(BigEndian.bytes), at: l2Offset + UInt64(changed.lowerBound) * 8)
      state.l2Cache.insert(table, at: l2Offset)
      try release(released, in: &state)
    }
  }

  /// Makes every cluster of the image unallocated (`qemu-img commit` empties the overlay).
  public func unmapAll() throws(DiskImageError) {
    try withMetadata { state throws(DiskImageError) in
      try unmapClusters(0..<state.header.size, in: &state)
      try file.orderingPoint()
    }
  }

  /// Drops this table's reference to what `mapping` pointed at, once the new entry is durable.
  func release(_ mapping: Mapping, in state: inout State) throws(DiskImageError) {
    try release([mapping], in: &state)
  }

  /// Drops this table's references to what `mappings` pointed at, once the new entries are
  /// durable (one ordering point, one refcount batch).
  func release(_ mappings: [Mapping], in state: inout State) throws(DiskImageError) {
    guard var refcounts = state.refcounts else { return }
    let hosts = mappings.compactMap { mapping -> (UInt64, UInt64)? in
      switch mapping {
      case .data(let host, _): (host, state.header.clusterSize)
      case .compressed(let host, let length): (host & ~511, UInt64(length) + (host & 511))
      case .unallocated, .zero: nil
      }
    }
    guard !hosts.isEmpty else { return }
    try file.orderingPoint()
    try refcounts.batch { (refcounts: inout QCow2Refcounts) throws(DiskImageError) in
      for (host, length) in hosts { try refcounts.adjust(offset: host, length: length, by: -1) }
    }
    state.refcounts = refcounts
  }

  /// The offset of the L2 table for `l1Index`, allocated or copied so this image owns it alone.
  func ownedL2Table(_ l1Index: Int, in state: inout State) throws(DiskImageError) -> UInt64 {
    guard l1Index < state.l1.count else {
      throw .invalid(path: path, reason: "L1 index \(l1Index) is past the L1 table (\(state.l1.count) entries)")
    }
    let entry = state.l1[l1Index]
    let current = entry & Self.offsetMask
    if current != 0 && entry & Self.copiedFlag != 0 { return current }
    guard var refcounts = state.refcounts else { throw .invalid(path: path, reason: "the image is open read-only") }
    let clusterSize = state.header.clusterSize
    var table = [UInt64](repeating: 0, count: Int(state.header.l2Entries))
    if current != 0 {
      // Shared with a snapshot: copy it; the data clusters it names stay shared (no COPIED flag).
      table = try Self.l2Table(at: current, in: &state, file).map { $0 & ~Self.copiedFlag }
    }
    let fresh = try refcounts.allocate()
    state.refcounts = refcounts
    try file.orderingPoint()
    try file.write(table.flatMap(BigEndian.bytes), at: fresh)
    try file.orderingPoint()  // the table's contents before the L1 entry that names it
    state.l1[l1Index] = fresh | Self.copiedFlag
    try file.write(BigEndian.bytes(state.l1[l1Index]), at: state.header.l1TableOffset + UInt64(l1Index) * 8)
    state.l2Cache.insert(table, at: fresh)
    if current != 0 {
      try file.orderingPoint()
      try refcounts.adjust(offset: current, length: clusterSize, by: -1)
      state.refcounts = refcounts
    }
    return fresh
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
    if tables[offset] == nil, tables.count >= capacity,
      let oldest = tables.min(by: { $0.value.used < $1.value.used })?.key
    {
      tables.removeValue(forKey: oldest)
    }
    clock += 1
    tables[offset] = (table, clock)
  }
}

/// A plain mutex for the image's metadata (held across the file I/O of a metadata update).
final class MetadataLock: @unchecked Sendable {
  private let mutex = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
  init() { pthread_mutex_init(mutex, nil) }
  deinit {
    pthread_mutex_destroy(mutex)
    mutex.deallocate()
  }
  func lock() { pthread_mutex_lock(mutex) }
  func unlock() { pthread_mutex_unlock(mutex) }
}

extension QCow2Image {
  /// Writes one whole guest cluster compressed (as `qemu-img convert -c` does), if it
  /// shrinks; otherwise writes it as it is. The cluster must not be allocated yet.
  public func writeCompressed(cluster index: UInt64, _ bytes: [UInt8]) throws(DiskImageError) {
    let header = self.header
    guard bytes.count == Int(header.clusterSize) else {
      throw .invalid(path: path, reason: "a compressed write must be exactly one cluster")
    }
    let position = index << UInt64(header.clusterBits)
    guard let compressed = RawDeflate.compress(bytes), compressed.count < Int(header.clusterSize) - 512,
      try mapping(of: position) == .unallocated
    else {
      try write(bytes, at: position)
      return
    }
    try withMetadata { state throws(DiskImageError) in
      try writeCompressedCluster(compressed, at: position, in: &state)
    }
  }
}
