import Checked
import Glibc

/// Internal snapshots: create, apply, delete. Each follows QEMU's order of updates, so a
/// crash at any point leaves leaked clusters at worst: references are counted up before
/// the table that holds them is published, and counted down only after it is gone.
extension QCow2Image {
  /// The image's internal snapshots.
  public var snapshots: [QCow2Snapshot] {
    get throws(DiskImageError) { try QCow2Snapshot.readTable(header: header, file: file).snapshots }
  }

  /// Records the current disk contents as a snapshot named `name`. With `vmStateSize`, the VM
  /// state written to the VM state area (`writeVMState`) belongs to the snapshot: its entry
  /// records the size (what `qemu-img snapshot -l` shows as VM SIZE) and the guest clock.
  public func createSnapshot(named name: String, vmStateSize: UInt64 = 0, vmClockNanoseconds: UInt64 = 0)
    throws(DiskImageError)
  {
    try withMetadata { state throws(DiskImageError) in
      var (list, oldLength) = try QCow2Snapshot.readTable(header: state.header, file: file)
      guard !list.contains(where: { $0.name == name }) else {
        throw .invalid(path: path, reason: "a snapshot named '\(name)' already exists")
      }
      guard var refcounts = state.refcounts else { throw .invalid(path: path, reason: "the image is open read-only") }
      let clusterSize = state.header.clusterSize
      // 1. A copy of the active L1 table, without COPIED flags.
      let l1Bytes = UInt64(state.l1.count) * 8
      let l1Clusters = max(1, Int((l1Bytes + clusterSize - 1) / clusterSize))
      let copy = try refcounts.allocate(l1Clusters)
      state.refcounts = refcounts
      try file.write(state.l1.map { $0 & ~Self.copiedFlag }.flatMap(BigEndian.bytes), at: copy)
      // 2. Everything the active L1 references gains a reference; COPIED flags follow.
      try adjustReferences(of: state.l1, by: 1, in: &state)
      try updateCopiedFlags(in: &state)
      try file.orderingPoint()
      // 3. The new table, then the header that publishes it.
      var time = timespec()
      clock_gettime(CLOCK_REALTIME, &time)
      let nextID = (list.compactMap { Int($0.id) }.max() ?? 0) + 1
      list.append(
        QCow2Snapshot(
          l1TableOffset: copy, l1Size: UInt32(state.l1.count), id: String(nextID), name: name,
          dateSeconds: UInt32(truncatingIfNeeded: time.tv_sec), dateNanoseconds: UInt32(time.tv_nsec),
          vmClockNanoseconds: vmClockNanoseconds, vmStateSize: vmStateSize, diskSize: state.header.size))
      try writeSnapshotTable(list, replacing: oldLength, in: &state)
    }
  }

  /// Makes the disk's contents those of the snapshot `name` (by name or id).
  public func applySnapshot(_ name: String) throws(DiskImageError) {
    try withMetadata { state throws(DiskImageError) in
      let list = try QCow2Snapshot.readTable(header: state.header, file: file).snapshots
      guard let snapshot = list.first(where: { $0.name == name || $0.id == name }) else {
        throw .invalid(path: path, reason: "no snapshot '\(name)' (see 'skvm img snapshot -l')")
      }
      try snapshot.validateL1Table(header: state.header, fileLength: file.length, path: path)
      var table = try file.readEntries(count: Int(snapshot.l1Size), at: snapshot.l1TableOffset).map {
        $0 & ~Self.copiedFlag
      }
      guard table.count <= state.l1.count else {
        throw .unsupported(path: path, feature: "applying a snapshot with a larger L1 table than the image's")
      }
      table += [UInt64](repeating: 0, count: state.l1.count - table.count)
      let old = state.l1
      try adjustReferences(of: table, by: 1, in: &state)
      try file.orderingPoint()
      try file.write(table.flatMap(BigEndian.bytes), at: state.header.l1TableOffset)
      try file.orderingPoint()
      state.l1 = table
      state.l2Cache = L2Cache(capacity: state.l2Cache.capacity)
      try adjustReferences(of: old, by: -1, in: &state)
      if let size = snapshot.diskSize, size != state.header.size {
        try file.write(BigEndian.bytes(size), at: 24)
        state.header.size = size
      }
      try updateCopiedFlags(in: &state)
      try file.orderingPoint()
    }
  }

  /// Deletes the snapshot `name` (by name or id) and frees what only it referenced.
  public func deleteSnapshot(_ name: String) throws(DiskImageError) {
    try withMetadata { state throws(DiskImageError) in
      var (list, oldLength) = try QCow2Snapshot.readTable(header: state.header, file: file)
      guard let index = list.firstIndex(where: { $0.name == name || $0.id == name }) else {
        throw .invalid(path: path, reason: "no snapshot '\(name)' (see 'skvm img snapshot -l')")
      }
      try list[index].validateL1Table(header: state.header, fileLength: file.length, path: path)
      let snapshot = list.remove(at: index)
      try writeSnapshotTable(list, replacing: oldLength, in: &state)
      let table = try file.readEntries(count: Int(snapshot.l1Size), at: snapshot.l1TableOffset)
      try adjustReferences(of: table, by: -1, in: &state)
      guard var refcounts = state.refcounts else { return }
      try refcounts.adjust(
        offset: snapshot.l1TableOffset, length: max(UInt64(snapshot.l1Size) * 8, 1), by: -1)
      state.refcounts = refcounts
      try updateCopiedFlags(in: &state)
      try file.orderingPoint()
    }
  }

  /// Adds `delta` to the refcount of every L2 table `l1` names and every cluster those tables name.
  private func adjustReferences(of l1: [UInt64], by delta: Int64, in state: inout State) throws(DiskImageError) {
    guard var refcounts = state.refcounts else { throw .invalid(path: path, reason: "the image is open read-only") }
    let header = state.header
    let fileLength = file.length
    // Counting references to clusters past the end of the file would grow the refcount
    // structure without bound for nothing: such a table is corrupt.
    func checkInside(_ offset: UInt64, _ length: UInt64) throws(DiskImageError) {
      guard offset.fits(length: length, within: fileLength + header.clusterSize) else {
        throw .invalid(
          path: path,
          reason: "a table names cluster 0x\(String(offset, radix: 16)) past the end of the file; "
            + "the image is corrupt ('skvm img check -r all')")
      }
    }
    try refcounts.batch { (refcounts: inout QCow2Refcounts) throws(DiskImageError) in
      for entry in l1 {
        let l2Offset = entry & Self.offsetMask
        guard l2Offset != 0 else { continue }
        try checkInside(l2Offset, header.clusterSize)
        try refcounts.adjust(offset: l2Offset, length: header.clusterSize, by: delta)
        let entries = try file.readEntries(count: Int(header.l2Entries), at: l2Offset)
        for l2Entry in entries {
          guard l2Entry != 0 else { continue }
          switch try Self.decode(l2Entry, header: header, path: path) {
          case .data(let host, _):
            try checkInside(host, header.clusterSize)
            try refcounts.adjust(offset: host, length: header.clusterSize, by: delta)
          case .compressed(let host, let length):
            try checkInside(host & ~511, UInt64(length) + (host & 511))
            try refcounts.adjust(offset: host & ~511, length: UInt64(length) + (host & 511), by: delta)
          case .zero:
            let host = l2Entry & Self.offsetMask
            if host != 0 {
              try checkInside(host, header.clusterSize)
              try refcounts.adjust(offset: host, length: header.clusterSize, by: delta)
            }
          case .unallocated:
            break
          }
        }
      }
    }
    state.refcounts = refcounts
  }

  /// Sets COPIED exactly where the refcount is 1, in the active L1 table and the L2 tables it names.
  func updateCopiedFlags(in state: inout State) throws(DiskImageError) {
    guard var refcounts = state.refcounts else { return }
    let header = state.header
    let clusterBits = UInt64(header.clusterBits)
    for index in state.l1.indices {
      let l2Offset = state.l1[index] & Self.offsetMask
      guard l2Offset != 0 else { continue }
      let owned = try refcounts.refcount(l2Offset >> clusterBits) == 1
      let l1Entry = owned ? state.l1[index] | Self.copiedFlag : state.l1[index] & ~Self.copiedFlag
      if l1Entry != state.l1[index] {
        state.l1[index] = l1Entry
        try file.write(BigEndian.bytes(l1Entry), at: header.l1TableOffset + UInt64(index) * 8)
      }
      // Shared tables too: their entries must say "not exclusive" wherever a count is above 1.
      var table = try file.readEntries(count: Int(header.l2Entries), at: l2Offset)
      var changed = false
      for slot in table.indices {
        guard case .data(let host, let exclusive) = try Self.decode(table[slot], header: header, path: path) else {
          continue
        }
        let single = try refcounts.refcount(host >> clusterBits) == 1
        if single != exclusive {
          table[slot] = single ? table[slot] | Self.copiedFlag : table[slot] & ~Self.copiedFlag
          changed = true
        }
      }
      if changed {
        try file.write(table.flatMap(BigEndian.bytes), at: l2Offset)
        state.l2Cache.insert(table, at: l2Offset)
      }
    }
    state.refcounts = refcounts
  }

  /// Writes `list` as a new snapshot table, points the header at it, then frees the old one.
  private func writeSnapshotTable(_ list: [QCow2Snapshot], replacing oldLength: UInt64, in state: inout State)
    throws(DiskImageError)
  {
    guard var refcounts = state.refcounts else { throw .invalid(path: path, reason: "the image is open read-only") }
    let bytes = list.flatMap { $0.encoded() }
    var offset: UInt64 = 0
    if !bytes.isEmpty {
      let clusters = Int((UInt64(bytes.count) + state.header.clusterSize - 1) / state.header.clusterSize)
      offset = try refcounts.allocate(clusters)
      try file.write(bytes, at: offset)
      try file.orderingPoint()
    }
    let oldOffset = state.header.snapshotsOffset
    try file.write(BigEndian.bytes(UInt32(list.count)), at: 60)
    try file.write(BigEndian.bytes(offset), at: 64)
    try file.orderingPoint()
    state.header.snapshotCount = UInt32(list.count)
    state.header.snapshotsOffset = offset
    if oldOffset != 0 && oldLength > 0 { try refcounts.adjust(offset: oldOffset, length: oldLength, by: -1) }
    state.refcounts = refcounts
  }
}

extension QCow2Snapshot {
  /// The table entry: fixed fields, 24 bytes of extra data (as QEMU writes), id, name, padding.
  func encoded() -> [UInt8] {
    var bytes: [UInt8] = []
    func put<T: FixedWidthInteger>(_ value: T) { bytes += BigEndian.bytes(value) }
    put(UInt64(l1TableOffset))
    put(UInt32(l1Size))
    put(UInt16(id.utf8.count))
    put(UInt16(name.utf8.count))
    put(UInt32(dateSeconds))
    put(UInt32(dateNanoseconds))
    put(UInt64(vmClockNanoseconds))
    put(UInt32(truncatingIfNeeded: vmStateSize))
    put(UInt32(24))
    put(UInt64(vmStateSize))
    put(UInt64(diskSize ?? 0))
    put(UInt64.max)  // icount: not recorded
    bytes += Array(id.utf8) + Array(name.utf8)
    bytes += [UInt8](repeating: 0, count: (8 - bytes.count % 8) % 8)
    return bytes
  }
}
