import CSystemCalls
import CZlib
import Checked
import Devices
import Glibc
import GuestMemory

/// The snapshot file: one format for `migrate file:`, `--incoming file:` and (later) live
/// migration streams. A fixed little-endian header, the machine's state as JSON (versioned,
/// checksummed), then guest RAM at page-aligned offsets, one region after another, holes
/// where the guest's memory was never written — so a restore can map it (QEMU calls this
/// layout mapped-ram).
///
/// ```text
///   0  "SKVMSNAP"            8  format version (u32)   12  region count (u32)
///  16  record offset (u64)  24  record length (u64)    32  record CRC-32 (u32)
///  36  devices CRC-32 (u32) 40  RAM offset (u64)       48  RAM length (u64)
///  56  devices offset (u64) 64  devices length (u64)
///  72  regions: guest address, size, file offset (3 × u64 each), at most 16
/// 4096 the machine record (JSON), then the devices (JSON)   …   RAM, each region page-aligned
/// ```
///
/// Everything read from a file is untrusted: every offset and length is checked against the
/// file before it is used, and errors say what is wrong with the file.
public final class SnapshotFile: @unchecked Sendable {
  static let magic = Array("SKVMSNAP".utf8)
  public static let formatVersion: UInt32 = 1
  static let headerSize = 4096
  static let maximumRegions = 16
  static let maximumStateSize = 64 << 20
  static let ramAlignment: UInt64 = 2 << 20
  /// Where a live migration's destination puts RAM: past the largest state a snapshot holds.
  static let fixedRAMOffset = (UInt64(headerSize + maximumStateSize) + ramAlignment - 1) & ~(ramAlignment - 1)

  /// One region of guest RAM in the file.
  public struct Region: Sendable, Equatable {
    public var guestAddress: UInt64
    public var size: UInt64
    public var fileOffset: UInt64
  }

  public let path: String
  /// Open for reading (what the restored guest's RAM is mapped from).
  public let fd: Int32
  public let regions: [Region]
  /// The machine record (configuration, vCPUs, in-kernel devices), decoded and checked.
  public let record: MachineRecord
  /// The devices' states (JSON), restored into a built machine.
  public let devices: [UInt8]

  deinit { close(fd) }

  // MARK: Writing

  /// Where everything goes in a snapshot of `state` and `memory`: the header's bytes, the RAM
  /// regions' offsets, and the total length.
  struct Layout {
    let header: [UInt8]
    let regions: [Region]
    let length: UInt64
    let devicesOffset: UInt64

    init(record: [UInt8], devices: [UInt8], memory: GuestMemory) throws(VirtualMachineError) {
      try self.init(
        record: record, devices: devices, ranges: memory.regions.map { ($0.guestAddress, $0.size) }, ramOffset: nil)
    }

    /// The layout for RAM `ranges` (guest address, size), with RAM at `ramOffset` when given
    /// (a live migration's destination fills RAM before it has the state), else right after
    /// the state.
    init(record: [UInt8], devices: [UInt8], ranges: [(UInt64, UInt64)], ramOffset fixedOffset: UInt64?)
      throws(VirtualMachineError)
    {
      guard ranges.count <= maximumRegions, record.count + devices.count <= maximumStateSize else {
        throw .snapshot("the machine's state does not fit a snapshot")
      }
      devicesOffset = UInt64(headerSize + record.count)
      let stateEnd = devicesOffset + UInt64(devices.count)
      // RAM starts on a 2 MiB boundary (a hole in a file): whole clusters of any qcow2 image
      // holding it (savevm) and huge pages line up with guest pages.
      let ramOffset = fixedOffset ?? (stateEnd + SnapshotFile.ramAlignment - 1) & ~(SnapshotFile.ramAlignment - 1)
      var regions: [Region] = []
      var offset = ramOffset
      for (guestAddress, size) in ranges {
        regions.append(Region(guestAddress: guestAddress, size: size, fileOffset: offset))
        offset += size
      }
      var header = [UInt8](repeating: 0, count: headerSize)
      func put<T: FixedWidthInteger>(_ value: T, _ at: Int) {
        withUnsafeBytes(of: value.littleEndian) { header.replaceSubrange(at..<at + $0.count, with: $0) }
      }
      header.replaceSubrange(0..<8, with: magic)
      put(formatVersion, 8)
      put(UInt32(regions.count), 12)
      put(UInt64(headerSize), 16)
      put(UInt64(record.count), 24)
      put(checksum(record), 32)
      put(checksum(devices), 36)
      put(ramOffset, 40)
      put(offset - ramOffset, 48)
      put(devicesOffset, 56)
      put(UInt64(devices.count), 64)
      for (index, region) in regions.enumerated() {
        put(region.guestAddress, 72 + 24 * index)
        put(region.size, 80 + 24 * index)
        put(region.fileOffset, 88 + 24 * index)
      }
      self.header = header
      self.regions = regions
      length = offset
    }
  }

  /// Writes a snapshot: header, `state`, then every region of `memory`. The file appears
  /// complete and durable (fdatasync) when this returns, replacing any old one at once; a
  /// failure leaves the old one as it was.
  static func write(to path: String, state: (record: [UInt8], devices: [UInt8]), memory: GuestMemory)
    throws(VirtualMachineError)
  {
    func fail(_ what: String, _ code: Int32) -> VirtualMachineError {
      .snapshot("cannot write the snapshot \(path): \(what): \(String(cString: strerror(code)))")
    }
    let layout = try Layout(record: state.record, devices: state.devices, memory: memory)
    // Written beside the target and renamed over it at the end: a machine restored from the
    // old file in mapped mode keeps reading its pages from the old file, which stays whole.
    let temporary = path + ".part-\(getpid())"
    let fd = open(temporary, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
    guard fd >= 0 else { throw fail("open \(temporary)", errno) }
    var complete = false
    defer {
      close(fd)
      if !complete { unlink(temporary) }
    }
    try write(layout, state: state, memory: memory, to: fd, name: path)
    guard fdatasync(fd) == 0 else { throw fail("fdatasync", errno) }
    guard rename(temporary, path) == 0 else { throw fail("rename", errno) }
    complete = true
  }

  /// Writes the whole snapshot into `fd` (a file or a memfd), sparse where RAM is zeros.
  static func write(
    _ layout: Layout, state: (record: [UInt8], devices: [UInt8]), memory: GuestMemory, to fd: Int32, name: String
  )
    throws(VirtualMachineError)
  {
    func fail(_ what: String, _ code: Int32) -> VirtualMachineError {
      .snapshot("cannot write the snapshot \(name): \(what): \(String(cString: strerror(code)))")
    }
    guard ftruncate(fd, off_t(layout.length)) == 0 else { throw fail("truncate", errno) }
    for (bytes, at) in [
      (layout.header, UInt64(0)), (state.record, UInt64(headerSize)), (state.devices, layout.devicesOffset),
    ] {
      try writeAll(bytes, to: fd, at: at) { code throws(VirtualMachineError) in throw fail("write", code) }
    }
    for index in memory.regions.indices {
      do throws(GuestMemoryIOError) {
        try memory.write(region: index, to: fd, at: layout.regions[index].fileOffset)
      } catch {
        throw .snapshot("cannot write the snapshot \(name): \(error)")
      }
    }
  }

  static func writeAll(
    _ bytes: [UInt8], to fd: Int32, at offset: UInt64, failure: (Int32) throws(VirtualMachineError) -> Void
  ) throws(VirtualMachineError) {
    var done = 0
    while done < bytes.count {
      let wanted = bytes.count - done
      let written = bytes.withUnsafeBytes { pwrite(fd, $0.baseAddress! + done, wanted, off_t(offset) + off_t(done)) }
      if written < 0 && errno == EINTR { continue }
      guard written > 0 else {
        try failure(errno)
        return
      }
      done += written
    }
  }

  // MARK: Reading

  /// Opens and checks a snapshot file: its header, that every region lies inside the file,
  /// and the state's checksum.
  public convenience init(path: String) throws(VirtualMachineError) {
    let fd = csys_open_data_file(path, O_RDONLY, 0, nil)
    if fd == -2 { throw .snapshot("\(path) is not a regular file") }
    guard fd >= 0 else { throw .snapshot("cannot open the snapshot \(path): \(String(cString: strerror(errno)))") }
    try self.init(fd: fd, name: path)
  }

  /// Checks the snapshot in `fd` (which it then owns, and closes): a file, or a memfd a
  /// snapshot was extracted into. `name` is what errors call it.
  public init(fd: Int32, name path: String) throws(VirtualMachineError) {
    func invalid(_ reason: String) -> VirtualMachineError { .snapshot("\(path) is not a usable snapshot: \(reason)") }
    var owned = true
    defer { if owned { close(fd) } }
    var status = stat()
    guard fstat(fd, &status) == 0 else { throw invalid("fstat failed") }
    let fileSize = UInt64(status.st_size)
    guard fileSize >= UInt64(Self.headerSize) else { throw invalid("it is \(fileSize) bytes, shorter than a header") }
    var header = [UInt8](repeating: 0, count: Self.headerSize)
    guard header.withUnsafeMutableBytes({ pread(fd, $0.baseAddress, Self.headerSize, 0) }) == Self.headerSize else {
      throw invalid("its header cannot be read")
    }
    func u32(_ at: Int) -> UInt32 {
      header.withUnsafeBytes { UInt32(littleEndian: $0.loadUnaligned(fromByteOffset: at, as: UInt32.self)) }
    }
    func u64(_ at: Int) -> UInt64 {
      header.withUnsafeBytes { UInt64(littleEndian: $0.loadUnaligned(fromByteOffset: at, as: UInt64.self)) }
    }
    guard Array(header[0..<8]) == Self.magic else { throw invalid("no SKVMSNAP magic (not an skvm snapshot)") }
    guard u32(8) == Self.formatVersion else {
      throw invalid("format version \(u32(8)); this skvm reads version \(Self.formatVersion)")
    }
    let count = Int(u32(12))
    guard (1...Self.maximumRegions).contains(count) else { throw invalid("\(count) RAM regions") }
    let recordOffset = u64(16)
    let recordLength = u64(24)
    let devicesOffset = u64(56)
    let devicesLength = u64(64)
    guard recordOffset == UInt64(Self.headerSize),
      recordLength.checkedAdding(devicesLength).map({ $0 <= UInt64(Self.maximumStateSize) }) == true,
      recordOffset.fits(length: recordLength, within: fileSize), devicesOffset == recordOffset + recordLength,
      devicesOffset.fits(length: devicesLength, within: fileSize)
    else {
      throw invalid(
        "its state (\(recordLength) + \(devicesLength) bytes at \(recordOffset)) lies outside the file (\(fileSize) bytes; truncated?)"
      )
    }
    var regions: [Region] = []
    var end = devicesOffset + devicesLength
    for index in 0..<count {
      let region = Region(
        guestAddress: u64(72 + 24 * index), size: u64(80 + 24 * index), fileOffset: u64(88 + 24 * index))
      guard region.size > 0, region.size % GuestMemory.pageSize == 0, region.fileOffset % GuestMemory.pageSize == 0,
        region.guestAddress % GuestMemory.pageSize == 0, region.fileOffset >= end
      else { throw invalid("RAM region \(index) is malformed") }
      guard region.fileOffset.fits(length: region.size, within: fileSize) else {
        throw invalid(
          "RAM region \(index) (\(region.size) bytes at \(region.fileOffset)) reaches past the end of the file "
            + "(\(fileSize) bytes): truncated")
      }
      end = region.fileOffset + region.size
      regions.append(region)
    }
    func section(_ offset: UInt64, _ length: UInt64) throws(VirtualMachineError) -> [UInt8] {
      var bytes = [UInt8](repeating: 0, count: Int(length))
      var done = 0
      while done < bytes.count {
        let wanted = bytes.count - done
        let read = bytes.withUnsafeMutableBytes {
          pread(fd, $0.baseAddress! + done, wanted, off_t(offset) + off_t(done))
        }
        if read < 0 && errno == EINTR { continue }
        guard read > 0 else { throw invalid("its state cannot be read") }
        done += read
      }
      return bytes
    }
    let recordBytes = try section(recordOffset, recordLength)
    let devices = try section(devicesOffset, devicesLength)
    guard Self.checksum(recordBytes) == u32(32), Self.checksum(devices) == u32(36) else {
      throw invalid("its state fails its checksum (corrupted)")
    }
    record = try MachineRecord.decode(recordBytes, path: path)
    self.devices = devices
    self.path = path
    self.fd = fd
    self.regions = regions
    owned = false
  }

  /// The configuration the machine was saved with.
  public func savedConfiguration() throws(VirtualMachineError) -> VirtualMachineConfiguration {
    record.configuration
  }

  /// Restores every device's state into `registry` (whose devices must be those saved).
  public func restoreDevices(into registry: DeviceRegistry) throws(VirtualMachineError) {
    try MachineState.restoreDevices(devices, into: registry, path: path)
  }

  /// The file offset of each region, in guest-address order, when they match `ranges` (this
  /// machine's memory map); else an error naming the difference.
  func offsets(matching ranges: [(guestAddress: UInt64, size: UInt64)]) throws(VirtualMachineError) -> [UInt64] {
    let saved = regions.map { ($0.guestAddress, $0.size) }
    let wanted = ranges.sorted { $0.guestAddress < $1.guestAddress }.map { ($0.guestAddress, $0.size) }
    guard saved.count == wanted.count, zip(saved, wanted).allSatisfy({ $0 == $1 }) else {
      let savedTotal = regions.reduce(0) { $0 + $1.size }
      let wantedTotal = wanted.reduce(0) { $0 + $1.1 }
      throw .snapshot(
        "the snapshot holds \(savedTotal >> 20) MiB of guest RAM; this machine has \(wantedTotal >> 20) MiB "
          + "(give the same --memory)")
    }
    return regions.map(\.fileOffset)
  }

  static func checksum(_ bytes: [UInt8]) -> UInt32 {
    bytes.withUnsafeBufferPointer { UInt32(truncatingIfNeeded: crc32(0, $0.baseAddress, uInt($0.count))) }
  }
}
