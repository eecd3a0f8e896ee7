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

  /// The largest snapshot table read (QEMU's limit is 64 MiB).
  static let maximumTableBytes = 64 << 20

  /// Parses the snapshot table of an image whose header was checked; also returns the
  /// table's length in bytes.
  static func readTable(header: QCow2Header, file: ImageFile) throws(DiskImageError)
    -> (snapshots: [QCow2Snapshot], length: UInt64)
  {
    guard header.snapshotCount > 0 else { return ([], 0) }
    func invalid(_ reason: String) -> DiskImageError { .invalid(path: file.path, reason: reason) }
    let fileLength = file.length
    guard header.snapshotsOffset % 8 == 0, header.snapshotsOffset < fileLength else {
      throw invalid("snapshot table offset \(header.snapshotsOffset) is invalid")
    }
    let available = Int(min(UInt64(maximumTableBytes), fileLength - header.snapshotsOffset))
    let bytes = try file.read(count: available, at: header.snapshotsOffset)
    let reader = BigEndianReader(bytes)
    var snapshots: [QCow2Snapshot] = []
    var offset = 0
    for index in 0..<Int(header.snapshotCount) {
      guard offset + 40 <= bytes.count else { throw invalid("snapshot \(index) lies past the end of the table") }
      let idSize = Int(reader.u16(offset + 12))
      let nameSize = Int(reader.u16(offset + 14))
      let extraSize = Int(reader.u32(offset + 36))
      let end = offset + 40 + extraSize + idSize + nameSize
      guard extraSize <= 1024, end <= bytes.count else { throw invalid("snapshot \(index) has invalid sizes") }
      var snapshot = QCow2Snapshot(
        l1TableOffset: reader.u64(offset), l1Size: reader.u32(offset + 8),
        id: String(decoding: bytes[(offset + 40 + extraSize)..<(offset + 40 + extraSize + idSize)], as: UTF8.self),
        name: String(decoding: bytes[(offset + 40 + extraSize + idSize)..<end], as: UTF8.self),
        dateSeconds: reader.u32(offset + 16), dateNanoseconds: reader.u32(offset + 20),
        vmClockNanoseconds: reader.u64(offset + 24), vmStateSize: UInt64(reader.u32(offset + 32)), diskSize: nil)
      if extraSize >= 8 { snapshot.vmStateSize = reader.u64(offset + 40) }
      if extraSize >= 16 { snapshot.diskSize = reader.u64(offset + 48) }
      guard snapshot.l1TableOffset % header.clusterSize == 0,
        snapshot.l1TableOffset + UInt64(snapshot.l1Size) * 8 <= fileLength,
        UInt64(snapshot.l1Size) * 8 <= QCow2Header.maximumL1Bytes
      else { throw invalid("snapshot '\(snapshot.name)' has an invalid L1 table") }
      snapshots.append(snapshot)
      offset = (end + 7) & ~7
    }
    return (snapshots, UInt64(offset))
  }
}
