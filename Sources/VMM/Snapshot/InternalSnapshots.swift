import CSystemCalls
import DiskImage
import Glibc
import GuestMemory
import KVM

/// Internal snapshots, QEMU's way (`savevm`, `loadvm`, `delvm`): every writable disk gets a
/// qcow2 snapshot of one name, all or none, and the machine's state goes into the first
/// one's VM state area — so `qemu-img snapshot -l` lists it with its VM size.
extension VirtualMachine {
  /// One internal snapshot as `info snapshots` lists it.
  public struct InternalSnapshot: Sendable, Equatable {
    public var id: String
    public var name: String
    public var vmStateSize: UInt64
    public var dateSeconds: UInt32
    public var vmClockNanoseconds: UInt64
  }

  /// The writable disks, which must all be qcow2 to take snapshots (in order: the first holds
  /// the VM state); an error names a raw one.
  func snapshotDisks() throws(VirtualMachineError) -> [QCow2Image] {
    try Self.snapshotDisks(zip(pci?.disks.map(\.backend) ?? [], configuration.disks).map { ($0, $1.path) })
  }

  static func snapshotDisks(_ disks: [(backend: any BlockBackend, path: String)]) throws(VirtualMachineError)
    -> [QCow2Image]
  {
    var images: [QCow2Image] = []
    for (backend, path) in disks where !backend.isReadOnly {
      guard let image = backend as? QCow2Image else {
        throw .snapshot(
          "disk '\(path)' is not qcow2 and cannot take snapshots; convert it "
            + "(skvm img convert -O qcow2) or attach it with readonly=on")
      }
      images.append(image)
    }
    guard !images.isEmpty else {
      throw .snapshot("no writable qcow2 disk to hold the snapshot (attach one with --disk IMAGE.qcow2)")
    }
    return images
  }

  /// The snapshots on the disk that holds VM state, as `info snapshots` shows them.
  public func internalSnapshots() throws(VirtualMachineError) -> [InternalSnapshot] {
    guard let first = try snapshotDisks().first else { return [] }
    do {
      return try first.snapshots.map {
        InternalSnapshot(
          id: $0.id, name: $0.name, vmStateSize: $0.vmStateSize, dateSeconds: $0.dateSeconds,
          vmClockNanoseconds: $0.vmClockNanoseconds)
      }
    } catch {
      throw .snapshot("\(error)")
    }
  }

  /// `savevm NAME`: the paused machine's state into the first disk's VM state area, then a
  /// snapshot NAME on every writable disk (replacing one of the same name). All or none.
  public func saveInternalSnapshot(named name: String) throws(VirtualMachineError) {
    guard isPaused else { throw .snapshot("the machine must be paused to be saved") }
    // SKVM_TRACE_SAVEVM=1 prints where the time goes, on standard error.
    var trace = PhaseTrace("savevm \(name)", enabledBy: "SKVM_TRACE_SAVEVM")
    defer { trace.print() }
    let disks = try snapshotDisks()
    let state = try captureState().json()
    trace.mark("capture")
    let layout = try SnapshotFile.Layout(record: state.record, devices: state.devices, memory: memory)
    let holder = disks[0]
    let ordering = holder.metadataOrdering
    holder.metadataOrdering = .processCrash  // one flush at the end instead of one per cluster
    defer { holder.metadataOrdering = ordering }
    do {
      for disk in disks where (try disk.snapshots).contains(where: { $0.name == name }) {
        try disk.deleteSnapshot(name)
      }
      trace.mark("delete old")
      try write(layout.header, into: holder, at: 0)
      try write(state.record, into: holder, at: UInt64(SnapshotFile.headerSize))
      try write(state.devices, into: holder, at: layout.devicesOffset)
      // Writeback starts every 8 MiB, so the flush at the end waits for the last stretch only.
      var sinceWriteback = 0
      for index in memory.regions.indices {
        let base = layout.regions[index].fileOffset
        try memory.forEachNonZeroRun(region: index) { offset, bytes in
          try holder.writeVMState(bytes, at: base + offset)
          sinceWriteback += bytes.count
          if sinceWriteback >= 8 << 20 {
            holder.startWriteback()
            sinceWriteback = 0
          }
        }
      }
      trace.mark("write")
      try holder.flush()
      trace.mark("flush")
      let guestClock = (try? vm.clock().clock) ?? 0
      var created: [QCow2Image] = []
      do {
        for (index, disk) in disks.enumerated() {
          try disk.createSnapshot(
            named: name, vmStateSize: index == 0 ? layout.length : 0, vmClockNanoseconds: guestClock)
          created.append(disk)
        }
      } catch {
        for disk in created { try? disk.deleteSnapshot(name) }
        throw error
      }
      trace.mark("create")
      try holder.discardVMState(length: layout.length)
      trace.mark("discard")
      for disk in disks { try disk.flush() }
      trace.mark("flush")
    } catch let error as VirtualMachineError {
      throw error
    } catch {
      throw .snapshot("savevm \(name): \(error)")
    }
  }

  private func write(_ bytes: [UInt8], into image: QCow2Image, at offset: UInt64) throws(VirtualMachineError) {
    var failure: DiskImageError?
    bytes.withUnsafeBytes { buffer in
      do throws(DiskImageError) { try image.writeVMState(buffer, at: offset) } catch { failure = error }
    }
    if let failure { throw .snapshot("cannot write the VM state into \(image.path): \(failure)") }
  }

  /// `loadvm NAME`, the disk half: reverts every writable disk to snapshot NAME and returns the
  /// machine state it holds, extracted into a memfd (the caller builds the machine from it).
  /// The machine must be paused; it is not usable afterwards (its RAM and devices are stale).
  public func revertDisks(toSnapshot name: String) throws(VirtualMachineError) -> SnapshotFile {
    guard isPaused else { throw .snapshot("the machine must be paused to load a snapshot") }
    return try Self.revert(try snapshotDisks(), toSnapshot: name)
  }

  /// `-loadvm NAME` before any machine exists: opens the configuration's disks (kept open for
  /// the machine), reverts them to snapshot NAME, and returns the machine state it holds with
  /// a backing that maps its RAM straight from the image — or nil, where the image's clusters
  /// cannot be mapped (then the state's memfd holds a copy of the RAM).
  static func revertDisks(of configuration: VirtualMachineConfiguration, toSnapshot name: String)
    throws(VirtualMachineError) -> (snapshot: SnapshotFile, disks: [OpenedDisk], backing: GuestMemory.Backing?)
  {
    let opened = try OpenedDisk.openAll(configuration.disks)
    do {
      let images = try snapshotDisks(opened.map { ($0.backend, $0.configuration.path) })
      let (snapshot, backing) = try revert(images, toSnapshot: name, mappingRAM: true)
      return (snapshot, opened, backing)
    } catch {
      for disk in opened { disk.backend.close() }
      throw error
    }
  }

  /// Reverts `disks` to snapshot NAME and extracts the VM state the first one holds. Metadata
  /// updates keep their order and are made durable once, at the end.
  static func revert(_ disks: [QCow2Image], toSnapshot name: String) throws(VirtualMachineError) -> SnapshotFile {
    try revert(disks, toSnapshot: name, mappingRAM: false).snapshot
  }

  /// Reverts `disks` to snapshot NAME. With `mappingRAM`, the RAM is not copied: the first
  /// disk's VM state is dropped from its active layer (so nothing writes those clusters in
  /// place) and the clusters are pinned for as long as it stays open, and the backing returned
  /// maps them.
  static func revert(_ disks: [QCow2Image], toSnapshot name: String, mappingRAM: Bool)
    throws(VirtualMachineError) -> (snapshot: SnapshotFile, backing: GuestMemory.Backing?)
  {
    let orderings = disks.map(\.metadataOrdering)
    for disk in disks { disk.metadataOrdering = .processCrash }
    defer { for (disk, ordering) in zip(disks, orderings) { disk.metadataOrdering = ordering } }
    do {
      for disk in disks where !(try disk.snapshots).contains(where: { $0.name == name || $0.id == name }) {
        throw VirtualMachineError.snapshot("disk '\(disk.path)' has no snapshot '\(name)' (see info snapshots)")
      }
      guard let entry = try disks[0].snapshots.first(where: { $0.name == name || $0.id == name }),
        entry.vmStateSize > 0
      else {
        throw VirtualMachineError.snapshot(
          "snapshot '\(name)' holds no VM state (a disk-only snapshot, as qemu-img snapshot -c makes)")
      }
      for disk in disks { try disk.applySnapshot(name) }
      StartupTrace.shared.mark("revert disks")
      if mappingRAM, let mapped = try Self.mapVMState(of: disks[0], length: entry.vmStateSize, name: name) {
        StartupTrace.shared.mark("map state")
        for disk in disks { try disk.flush() }
        StartupTrace.shared.mark("flush")
        return mapped
      }
      let snapshot = try Self.extractVMState(from: disks[0], length: entry.vmStateSize, name: name)
      StartupTrace.shared.mark("extract state")
      for disk in disks { try disk.flush() }
      StartupTrace.shared.mark("flush")
      return (snapshot, nil)
    } catch let error as VirtualMachineError {
      throw error
    } catch {
      throw .snapshot("loadvm \(name): \(error)")
    }
  }

  /// The machine state in `image`'s VM state area with its RAM left in place: the header and
  /// device state copied into a memfd (as long as the whole state, RAM as holes), a backing
  /// mapping each RAM region from the image's clusters. Nil where the clusters cannot be
  /// mapped (smaller than a page, or compressed).
  static func mapVMState(of image: QCow2Image, length: UInt64, name: String) throws -> (
    SnapshotFile, GuestMemory.Backing
  )? {
    let header = try image.readVMState(count: SnapshotFile.headerSize, at: 0)
    let stateEnd = header.withUnsafeBytes {
      UInt64(littleEndian: $0.loadUnaligned(fromByteOffset: 56, as: UInt64.self))
        .checkedAdding(UInt64(littleEndian: $0.loadUnaligned(fromByteOffset: 64, as: UInt64.self)))
    }
    guard let stateEnd, stateEnd <= length else {
      throw VirtualMachineError.snapshot("snapshot '\(name)' in \(image.path) is damaged: its state lies past its end")
    }
    let snapshot = try extractVMState(from: image, length: length, copying: stateEnd, name: name)
    var extents: [[GuestMemory.FileExtent]] = []
    for region in snapshot.regions {
      let range = region.fileOffset..<region.fileOffset + region.size
      guard let pieces = try image.mapVMState(range, pageSize: GuestMemory.pageSize) else { return nil }
      extents.append(
        pieces.compactMap { piece in
          piece.hostOffset.map {
            GuestMemory.FileExtent(offset: piece.offset - region.fileOffset, length: piece.length, fileOffset: $0)
          }
        })
    }
    try image.discardVMState(length: length)
    return (snapshot, .fileExtents(fd: image.fileDescriptor, extents: extents))
  }

  /// Copies the VM state area (what has data of it; its first `copying` bytes where given)
  /// into a memfd `length` bytes long and checks it as a snapshot.
  static func extractVMState(from image: QCow2Image, length: UInt64, copying: UInt64? = nil, name: String) throws
    -> SnapshotFile
  {
    let fd = csys_memfd_create("skvm-loadvm")
    guard fd >= 0, ftruncate(fd, off_t(length)) == 0 else {
      if fd >= 0 { close(fd) }
      throw VirtualMachineError.snapshot("cannot make room to load snapshot '\(name)'")
    }
    do { try image.copyVMState(length: copying ?? length, to: fd) } catch {
      close(fd)
      throw error
    }
    return try SnapshotFile(fd: fd, name: "snapshot '\(name)' in \(image.path)")
  }

  /// `delvm NAME`: deletes snapshot NAME from every writable disk that has it.
  public func deleteInternalSnapshot(named name: String) throws(VirtualMachineError) {
    let disks = try snapshotDisks()
    var found = false
    do {
      for disk in disks where (try disk.snapshots).contains(where: { $0.name == name || $0.id == name }) {
        try disk.deleteSnapshot(name)
        found = true
      }
    } catch {
      throw .snapshot("delvm \(name): \(error)")
    }
    guard found else { throw .snapshot("no snapshot '\(name)' on any disk") }
  }
}
