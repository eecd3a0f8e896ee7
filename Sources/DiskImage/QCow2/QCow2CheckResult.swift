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

  /// The verdict, in qemu-img's exit statuses: 1 the check itself failed, 2 corrupt, 3 leaks only, 0 clean.
  public var exitStatus: Int32 {
    if checkErrors > 0 { return 1 }
    if corruptions > 0 { return 2 }
    if leaks > 0 { return 3 }
    return 0
  }
}

/// What `check` may repair (qemu-img check -r).
public enum QCow2Repair: Sendable {
  case none
  /// Lower refcounts that are too high (leaked clusters).
  case leaks
  /// Also raise refcounts that are too low, correct COPIED flags, drop invalid snapshots
  /// and rebuild refcount structures that cannot be trusted.
  case all

  var fixesLeaks: Bool { self != .none }
  var fixesErrors: Bool { self == .all }
}

extension QCow2Image {
  /// Recounts every reference (header, tables, snapshots, L2 tables, data) as qemu-img does,
  /// compares the counts with the stored refcounts, and repairs what `repair` allows
  /// (rebuilding the refcount structure when its blocks cannot be trusted). After a repair
  /// the image is checked again and that result returned, with what was fixed.
  public func check(repair: QCow2Repair = .none) throws(DiskImageError) -> QCow2CheckResult {
    try withMetadata { state throws(DiskImageError) in
      guard repair == .none || file.writable else { throw .invalid(path: path, reason: "the image is open read-only") }
      var checker = QCow2Checker(file: file, header: state.header, repair: repair)
      var first = try checker.run()
      guard repair != .none else { return first }
      // The tables on disk may have changed under the caches: read everything again.
      try reload(&state)
      if first.checkErrors == 0 && first.corruptions == 0 { try markCleanAndConsistent(&state) }
      guard first.leaksFixed + first.corruptionsFixed > 0 else { return first }
      var again = QCow2Checker(file: file, header: state.header, repair: .none)
      var second = try again.run()
      second.leaksFixed = first.leaksFixed
      second.corruptionsFixed = first.corruptionsFixed
      second.messages = first.messages + second.messages
      first = second
      return first
    }
  }

  /// After a repair that left no corruption: clears the dirty and corrupt bits, as qemu-img does.
  private func markCleanAndConsistent(_ state: inout State) throws(DiskImageError) {
    let flags = QCow2Header.Incompatible.dirty | QCow2Header.Incompatible.corrupt
    guard state.header.version >= 3, state.header.incompatibleFeatures & flags != 0 else { return }
    state.header.incompatibleFeatures &= ~flags
    try file.write(BigEndian.bytes(state.header.incompatibleFeatures), at: 72)
    try file.flush()
  }

  /// Reads the header, the L1 table and the refcount table again, emptying the caches.
  private func reload(_ state: inout State) throws(DiskImageError) {
    try file.orderingPoint()
    let header = try QCow2Header.read(from: file, forCheck: true)
    state.header = header
    state.l1 = try file.readEntries(count: Int(header.l1Size), at: header.l1TableOffset)
    state.l2Cache = L2Cache(capacity: state.l2Cache.capacity)
    if state.refcounts != nil {
      let moved = state.refcounts?.tableMoved
      state.refcounts = try QCow2Refcounts(file: file, header: header)
      if let moved { state.refcounts?.tableMoved = moved }
    }
  }
}
