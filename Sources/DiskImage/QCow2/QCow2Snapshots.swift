import Checked

/// An internal snapshot as the qcow2 snapshot table records it.
public struct QCow2Snapshot: Sendable, Equatable {
  public var l1TableOffset: UInt64
  public var l1Size: UInt32
  public var id: String
  public var name: String
  public var dateSeconds: UInt32
  public var dateNanoseconds: UInt32
  public var vmClockNanoseconds: UInt64
  public var vmStateSize: UInt64
  public var diskSize: UInt64?
  /// The entry's bytes as the table stores them (empty for a snapshot not read from a table).
  var storedEntry: [UInt8] = []
  /// Bytes of extra data the entry has (QEMU writes 24).
  var extraDataSize = 24

  /// The largest snapshot table read (QEMU's limit is 64 MiB).
  static let maximumTableBytes = 64 << 20

  /// Parses the snapshot table of an image whose header was checked; also returns the
  /// table's length in bytes. A damaged table is an error naming the damage.
  static func readTable(header: QCow2Header, file: ImageFile) throws(DiskImageError)
    -> (snapshots: [QCow2Snapshot], length: UInt64)
  {
    let table = try parseTable(header: header, file: file)
    if let damage = table.damage { throw .invalid(path: file.path, reason: damage) }
    return (table.snapshots, table.length)
  }

  /// The snapshot table as far as it can be read: the entries up to the first damaged one
  /// (what `check` keeps), their length in bytes, and what is wrong after them, if anything.
  struct ParsedTable {
    var snapshots: [QCow2Snapshot] = []
    var length: UInt64 = 0
    var damage: String?
  }

  static func parseTable(header: QCow2Header, file: ImageFile) throws(DiskImageError) -> ParsedTable {
    var table = ParsedTable()
    guard header.snapshotCount > 0 else { return table }
    let fileLength = file.length
    guard header.snapshotsOffset % 8 == 0, header.snapshotsOffset < fileLength else {
      table.damage = "snapshot table offset \(header.snapshotsOffset) is invalid"
      return table
    }
    // Read as far as the entries reach (the table is small; the file after it may be large).
    let available = Int(min(UInt64(maximumTableBytes), fileLength - header.snapshotsOffset))
    var bytes = try file.read(count: min(available, 65536), at: header.snapshotsOffset)
    var reader = BigEndianReader(bytes)
    func ensure(_ end: Int) throws(DiskImageError) {
      guard end > bytes.count, bytes.count < available else { return }
      bytes = try file.read(count: min(available, max(end, bytes.count * 2)), at: header.snapshotsOffset)
      reader = BigEndianReader(bytes)
    }
    var offset = 0
    for index in 0..<Int(header.snapshotCount) {
      try ensure(offset + 40)
      guard offset + 40 <= bytes.count else {
        table.damage = "snapshot \(index) lies past the end of the table"
        return table
      }
      let idSize = Int(reader.u16(offset + 12))
      let nameSize = Int(reader.u16(offset + 14))
      let extraSize = Int(reader.u32(offset + 36))
      let end = offset + 40 + min(extraSize, 1 << 20) + idSize + nameSize
      if extraSize <= 1024 { try ensure(end) }
      guard extraSize <= 1024, end <= bytes.count else {
        table.damage = "snapshot \(index) has invalid sizes (extra data \(extraSize), id \(idSize), name \(nameSize))"
        return table
      }
      var snapshot = QCow2Snapshot(
        l1TableOffset: reader.u64(offset), l1Size: reader.u32(offset + 8),
        id: String(decoding: bytes[(offset + 40 + extraSize)..<(offset + 40 + extraSize + idSize)], as: UTF8.self),
        name: String(decoding: bytes[(offset + 40 + extraSize + idSize)..<end], as: UTF8.self),
        dateSeconds: reader.u32(offset + 16), dateNanoseconds: reader.u32(offset + 20),
        vmClockNanoseconds: reader.u64(offset + 24), vmStateSize: UInt64(reader.u32(offset + 32)), diskSize: nil)
      if extraSize >= 8 { snapshot.vmStateSize = reader.u64(offset + 40) }
      if extraSize >= 16 { snapshot.diskSize = reader.u64(offset + 48) }
      snapshot.extraDataSize = extraSize
      snapshot.storedEntry = Array(bytes[offset..<min(bytes.count, (end + 7) & ~7)])
      table.snapshots.append(snapshot)
      offset = (end + 7) & ~7
      table.length = UInt64(offset)
    }
    return table
  }

  /// Checks the snapshot's L1 table before it is used (the table entry is untrusted: `check`
  /// reports a bad one as a corruption, everything else refuses it with this error).
  func validateL1Table(header: QCow2Header, fileLength: UInt64, path: String) throws(DiskImageError) {
    guard l1TableOffset % header.clusterSize == 0, UInt64(l1Size) * 8 <= QCow2Header.maximumL1Bytes,
      l1TableOffset.fits(length: UInt64(l1Size) * 8, within: fileLength)
    else {
      throw .invalid(
        path: path,
        reason: "snapshot '\(name)' has an invalid L1 table (offset 0x\(String(l1TableOffset, radix: 16)), "
          + "\(l1Size) entries); 'skvm img check -r all' removes it")
    }
  }

  /// The snapshot table as stored: each entry, padded to 8 bytes.
  static func encodeTable(_ snapshots: [QCow2Snapshot]) -> [UInt8] {
    snapshots.flatMap { $0.storedEntry.isEmpty ? $0.encoded() : $0.storedEntry }
  }
}
