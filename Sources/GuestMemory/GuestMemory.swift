import CSystemCalls
import Glibc
import KVM
import Synchronization

/// Guest RAM: host memory regions mapped at guest-physical addresses.
///
/// The regions are fixed when the object is made; after that the object is
/// immutable and may be shared by every vCPU and device thread. The bytes
/// themselves are shared with the running guest, so accesses are plain loads
/// and stores with no ordering beyond what the guest's own protocol provides.
public final class GuestMemory: @unchecked Sendable {
  /// One contiguous piece of guest RAM.
  public struct Region: Sendable {
    /// First guest-physical address.
    public let guestAddress: UInt64
    /// Length in bytes (a multiple of the page size).
    public let size: UInt64
    /// The KVM memory slot number.
    public let slot: UInt32
    /// The index of this region's first page among all of guest RAM's (for the write log).
    public var firstPage: UInt64 = 0
    /// Where it lives in this process.
    public nonisolated(unsafe) let host: UnsafeMutableRawPointer

    /// One past the last guest-physical address.
    public var end: UInt64 { guestAddress + size }

    /// Whether `[address, address + length)` lies inside this region.
    @inline(__always)
    public func contains(_ address: UInt64, length: UInt64) -> Bool {
      address >= guestAddress && length <= size && address - guestAddress <= size - length
    }
  }

  /// The page size guest RAM is managed in.
  public static let pageSize: UInt64 = 4096

  /// What holds guest RAM on the host.
  public enum Backing: Sendable {
    /// One memfd holding every region back to back: it can be written out without a copy
    /// through user space. Hosts give shared memory no transparent huge pages by default
    /// (`shmem_enabled` is `never`), so every 4 KiB the guest touches is a fault of its own.
    case memfd
    /// Private anonymous memory (the default for a machine that boots), as QEMU and Cloud
    /// Hypervisor give their guests: 2 MiB-aligned, with transparent huge pages asked for
    /// above the first 2 MiB (one fault and one TLB entry per 2 MiB the guest touches, and
    /// huge pages in the EPT/NPT); the low 2 MiB, where small guests and boot structures
    /// live, stays in small pages so a tiny guest costs a few pages, not a huge one.
    case anonymous
    /// A snapshot file's RAM, each region at the file offset given, mapped copy-on-write:
    /// pages load from the file when the guest first touches them (the file must stay).
    case file(fd: Int32, offsets: [UInt64])
    /// A snapshot file's RAM copied into a fresh memfd (the file may go away afterwards).
    case fileCopy(fd: Int32, offsets: [UInt64])
    /// RAM scattered over a file (a snapshot inside a qcow2 image): region i is zeros but
    /// for `extents[i]`, each mapped copy-on-write from the file. The file must stay, and
    /// those bytes of it unchanged, while the memory lives.
    case fileExtents(fd: Int32, extents: [[FileExtent]])
  }

  /// Part of a region mapped from a file: `length` bytes at `offset` in the region are the
  /// file's bytes at `fileOffset` (all three page-aligned).
  public struct FileExtent: Sendable, Equatable {
    public let offset: UInt64
    public let length: UInt64
    public let fileOffset: UInt64
    public init(offset: UInt64, length: UInt64, fileOffset: UInt64) {
      self.offset = offset
      self.length = length
      self.fileOffset = fileOffset
    }
  }

  /// The size of a transparent huge page on x86-64.
  static let hugePageSize = 2 << 20

  /// Maps `size` bytes of private anonymous memory for RAM at `guestAddress`, aligned so that
  /// guest-physical and host-virtual addresses agree modulo 2 MiB (else no huge page of the
  /// host could back a huge page of the guest's), with transparent huge pages asked for
  /// above guest-physical 2 MiB and refused below it.
  private static func mapAnonymous(guestAddress: UInt64, size: UInt64) -> UnsafeMutableRawPointer? {
    let huge = UInt64(hugePageSize)
    let flags = MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE
    guard size <= UInt64(Int.max) - huge else {
      errno = ENOMEM
      return MAP_FAILED
    }
    guard let reserved = mmap(nil, Int(size + huge), PROT_READ | PROT_WRITE, flags, -1, 0), reserved != MAP_FAILED
    else { return MAP_FAILED }
    // The first address at or after `reserved` that is congruent to `guestAddress`.
    let skew = (guestAddress &- UInt64(UInt(bitPattern: reserved))) % huge
    let host = reserved + Int(skew)
    if skew > 0 { munmap(reserved, Int(skew)) }
    if huge - skew > 0 { munmap(host + Int(size), Int(huge - skew)) }
    // Below 2 MiB guest-physical: small pages, even where the host makes huge ones unasked.
    let low = guestAddress < huge ? min(huge - guestAddress, size) : 0
    if low > 0 { _ = madvise(host, Int(low), 15) }  // MADV_NOHUGEPAGE
    if size > low { _ = madvise(host + Int(low), Int(size - low), 14) }  // MADV_HUGEPAGE
    return host
  }

  /// Maps `size` bytes of zeros with `extents` of `file` over them, copy-on-write.
  private static func mapExtents(_ extents: [FileExtent], of file: Int32, size: UInt64) -> UnsafeMutableRawPointer? {
    guard
      extents.allSatisfy({
        $0.length > 0 && ($0.offset | $0.length | $0.fileOffset) % pageSize == 0 && $0.offset <= size
          && $0.length <= size - $0.offset && $0.fileOffset <= UInt64(Int64.max) - $0.length
      })
    else {
      errno = EINVAL
      return MAP_FAILED
    }
    let protection = PROT_READ | PROT_WRITE
    guard let host = mmap(nil, Int(size), protection, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0),
      host != MAP_FAILED
    else { return MAP_FAILED }
    for extent in extents {
      let flags = MAP_PRIVATE | MAP_FIXED | MAP_NORESERVE
      let mapped = mmap(
        host + Int(extent.offset), Int(extent.length), protection, flags, file, off_t(extent.fileOffset))
      guard mapped != MAP_FAILED else {
        let code = errno
        munmap(host, Int(size))
        errno = code
        return MAP_FAILED
      }
    }
    return host
  }

  /// The regions, sorted by guest address, non-overlapping.
  public let regions: [Region]
  /// The memfd behind every region (region i at `memfdOffsets[i]`), or -1.
  public let memfd: Int32
  /// Where each region lives in `memfd`.
  public let memfdOffsets: [UInt64]
  /// The write log: one bit per page of guest RAM, set by `noteWrite` while logging is on.
  private let writeLog: UnsafeMutablePointer<UInt64>
  private let writeLogWords: Int
  private let logging = Atomic<Bool>(false)
  /// The snapshot file a `.file` backing maps copy-on-write (a duplicate descriptor), or -1;
  /// region i at `sourceOffsets[i]`. Pages the guest has not written still come from it.
  public let sourceFile: Int32
  public let sourceOffsets: [UInt64]
  /// True when every region is private anonymous memory: a page that is neither present
  /// nor swapped out (per /proc/self/pagemap) was never written and reads as zeros.
  let isAnonymous: Bool

  /// The total amount of guest RAM in bytes.
  public var totalSize: UInt64 { regions.reduce(0) { $0 + $1.size } }

  /// Maps host memory for each `(guestAddress, size)` range, backed as `backing` says.
  ///
  /// Memory is committed lazily: the host pays only for pages the guest touches.
  public init(ranges: [(guestAddress: UInt64, size: UInt64)], backing: Backing = .anonymous)
    throws(GuestMemoryAllocationError)
  {
    let sorted = ranges.sorted { $0.guestAddress < $1.guestAddress }
    var end: UInt64 = 0
    var offsets: [UInt64] = []
    for range in sorted {
      guard range.size > 0, range.size % Self.pageSize == 0, range.guestAddress % Self.pageSize == 0,
        range.guestAddress <= UInt64.max - range.size, range.guestAddress >= end || offsets.isEmpty
      else { throw GuestMemoryAllocationError.invalidRange(guestAddress: range.guestAddress, size: range.size) }
      end = range.guestAddress + range.size
      offsets.append(offsets.isEmpty ? 0 : offsets[offsets.count - 1] + sorted[offsets.count - 1].size)
    }
    let total = sorted.reduce(0) { $0 + $1.size }
    var fd: Int32 = -1
    switch backing {
    case .memfd, .fileCopy:
      fd = csys_memfd_create("skvm-guest-ram")
      guard fd >= 0, ftruncate(fd, off_t(total)) == 0 else {
        let code = errno
        if fd >= 0 { close(fd) }
        throw GuestMemoryAllocationError.mmapFailed(size: total, errno: code)
      }
    case .anonymous, .file, .fileExtents:
      break
    }
    var regions: [Region] = []
    for (index, range) in sorted.enumerated() {
      let host: UnsafeMutableRawPointer?
      switch backing {
      case .memfd, .fileCopy:
        host = mmap(nil, Int(range.size), PROT_READ | PROT_WRITE, MAP_SHARED, fd, off_t(offsets[index]))
        // Huge pages, where the host gives them to shared memory that asks (`shmem_enabled`).
        if let host, host != MAP_FAILED { _ = madvise(host, Int(range.size), 14) }  // MADV_HUGEPAGE
      case .anonymous:
        host = Self.mapAnonymous(guestAddress: range.guestAddress, size: range.size)
      case .fileExtents(let file, let extents):
        host = index < extents.count ? Self.mapExtents(extents[index], of: file, size: range.size) : MAP_FAILED
      case .file(let file, let fileOffsets):
        host =
          index < fileOffsets.count
          ? mmap(
            nil, Int(range.size), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_NORESERVE, file, off_t(fileOffsets[index]))
          : MAP_FAILED
      }
      guard let host, host != MAP_FAILED else {
        let code = errno
        Self.unmap(regions)
        if fd >= 0 { close(fd) }
        throw GuestMemoryAllocationError.mmapFailed(size: range.size, errno: code)
      }
      var region = Region(guestAddress: range.guestAddress, size: range.size, slot: UInt32(index), host: host)
      region.firstPage = offsets[index] / Self.pageSize
      regions.append(region)
    }
    self.regions = regions
    writeLogWords = Int((total / Self.pageSize + 63) / 64)
    writeLog = UnsafeMutablePointer<UInt64>.allocate(capacity: max(writeLogWords, 1))
    writeLog.initialize(repeating: 0, count: max(writeLogWords, 1))
    memfd = fd
    memfdOffsets = fd >= 0 ? offsets : []
    if case .anonymous = backing { isAnonymous = true } else { isAnonymous = false }
    if case .file(let file, let fileOffsets) = backing {
      sourceFile = dup(file)
      sourceOffsets = fileOffsets
    } else {
      sourceFile = -1
      sourceOffsets = []
    }
    if case .fileCopy(let file, let fileOffsets) = backing {
      do {
        for (index, region) in regions.enumerated() where index < fileOffsets.count {
          try Self.copyData(from: file, at: fileOffsets[index], into: region, memfd: fd, memfdOffset: offsets[index])
        }
      } catch {
        Self.unmap(regions)
        close(fd)
        throw GuestMemoryAllocationError.copyFailed(errno: error.code)
      }
    }
  }

  deinit {
    Self.unmap(regions)
    if memfd >= 0 { close(memfd) }
    if sourceFile >= 0 { close(sourceFile) }
    writeLog.deallocate()
  }

  private static func unmap(_ regions: [Region]) {
    for region in regions { munmap(region.host, Int(region.size)) }
  }

  /// Registers every region with `vm` as a memory slot.
  public func map(into vm: KVMVirtualMachine, logDirtyPages: Bool = false) throws(KVMError) {
    for region in regions {
      try vm.setMemorySlot(
        region.slot, guestAddress: region.guestAddress, size: region.size, host: region.host,
        flags: logDirtyPages ? .logDirtyPages : [])
    }
  }

  // MARK: Access

  /// The region containing all of `[address, address + length)`, if any.
  @inline(__always)
  public func region(containing address: UInt64, length: UInt64) -> Region? {
    for region in regions where region.contains(address, length: length) { return region }
    return nil
  }

  /// Host memory backing `[address, address + length)`; the range must lie in one region.
  ///
  /// The buffer stays valid for the lifetime of this object. Use it for zero-copy
  /// device I/O; the guest may change the bytes at any time.
  @inline(__always)
  public func buffer(at address: UInt64, length: Int) throws(GuestMemoryError) -> UnsafeMutableRawBufferPointer {
    guard length >= 0 else { throw GuestMemoryError(address: address, length: 0) }
    guard let region = region(containing: address, length: UInt64(length)) else {
      throw GuestMemoryError(address: address, length: UInt64(length))
    }
    return UnsafeMutableRawBufferPointer(start: region.host + Int(address - region.guestAddress), count: length)
  }

  /// Host memory backing `[address, address + length)` for the VMM to write into (a device's
  /// DMA): as `buffer`, and the pages are noted in the write log while it is on. Call
  /// `finishedWriting(at:length:)` once the bytes are in: a migration pass that takes the
  /// pages between the two sends them before the write lands, and only the second note makes
  /// the next pass send them again.
  @inline(__always)
  public func bufferForWriting(at address: UInt64, length: Int) throws(GuestMemoryError)
    -> UnsafeMutableRawBufferPointer
  {
    let buffer = try self.buffer(at: address, length: length)
    noteWrite(address, length: length)
    return buffer
  }

  /// Notes that the VMM has finished writing `[address, address + length)` through a buffer
  /// from `bufferForWriting` (the write log's second note; see there).
  @inline(__always)
  public func finishedWriting(at address: UInt64, length: Int) { noteWrite(address, length: length) }

  // MARK: The write log

  /// Starts noting every page the VMM writes through `bufferForWriting`, `write` and `store`
  /// (KVM's dirty log sees only the guest's own writes); clears what was noted before.
  public func startLoggingWrites() {
    for word in 0..<writeLogWords { _ = csys_atomic_take64(writeLog + word) }
    logging.store(true, ordering: .releasing)
  }

  /// Stops noting writes.
  public func stopLoggingWrites() { logging.store(false, ordering: .releasing) }

  /// Guest-physical addresses of the pages the VMM wrote since the last call (or since
  /// logging started); they are cleared as they are taken.
  public func takeWrittenPages() -> [UInt64] {
    var pages: [UInt64] = []
    for region in regions {
      let first = Int(region.firstPage)
      let count = Int(region.size / Self.pageSize)
      var page = first
      while page < first + count {
        let word = page / 64
        let taken = csys_atomic_take64(writeLog + word)
        var bits = taken
        while bits != 0 {
          let bit = bits.trailingZeroBitCount
          bits &= bits - 1
          let index = word * 64 + bit
          if index >= first && index < first + count {
            pages.append(region.guestAddress + UInt64(index - first) * Self.pageSize)
          } else {
            csys_atomic_or64(writeLog + word, 1 << UInt64(bit))  // another region's: put it back
          }
        }
        page = (word + 1) * 64
      }
    }
    return pages
  }

  /// Notes `[address, address + length)` as written, if logging is on (one relaxed load if not).
  /// A write is noted after its bytes are in guest memory (or again then), never only before.
  @inline(__always)
  public func noteWrite(_ address: UInt64, length: Int) {
    guard logging.load(ordering: .relaxed), length > 0,
      let region = region(containing: address, length: UInt64(length))
    else { return }
    let first = region.firstPage + (address - region.guestAddress) / Self.pageSize
    let last = region.firstPage + (address - region.guestAddress + UInt64(length) - 1) / Self.pageSize
    for page in first...last { csys_atomic_or64(writeLog + Int(page / 64), 1 << (page % 64)) }
  }

  /// Copies guest memory at `address` into `destination`.
  public func read(into destination: UnsafeMutableRawBufferPointer, from address: UInt64) throws(GuestMemoryError) {
    let source = try buffer(at: address, length: destination.count)
    if let target = destination.baseAddress, let base = source.baseAddress {
      target.copyMemory(from: base, byteCount: destination.count)
    }
  }

  /// Copies `bytes` into guest memory at `address`.
  public func write(_ bytes: UnsafeRawBufferPointer, to address: UInt64) throws(GuestMemoryError) {
    let target = try buffer(at: address, length: bytes.count)
    if let source = bytes.baseAddress, let base = target.baseAddress {
      base.copyMemory(from: source, byteCount: bytes.count)
    }
    noteWrite(address, length: bytes.count)
  }

  /// Copies `bytes` into guest memory at `address`.
  public func write(_ bytes: [UInt8], to address: UInt64) throws(GuestMemoryError) {
    let target = try buffer(at: address, length: bytes.count)
    target.copyBytes(from: bytes)
    noteWrite(address, length: bytes.count)
  }

  /// Reads `length` bytes at `address` into a new array.
  public func bytes(at address: UInt64, length: Int) throws(GuestMemoryError) -> [UInt8] {
    let source = try buffer(at: address, length: length)
    return Array(source)
  }

  /// Loads a little-endian integer at `address` (any alignment). Inlinable, so callers in other
  /// modules get it specialized (unspecialized, every call looked up generic metadata at run time).
  @inlinable @inline(__always)
  public func load<T: FixedWidthInteger>(_ type: T.Type, at address: UInt64) throws(GuestMemoryError) -> T {
    let source = try buffer(at: address, length: MemoryLayout<T>.size)
    return T(littleEndian: source.loadUnaligned(as: T.self))
  }

  /// Stores a little-endian integer at `address` (any alignment); inlinable like `load`.
  @inlinable @inline(__always)
  public func store<T: FixedWidthInteger>(_ value: T, at address: UInt64) throws(GuestMemoryError) {
    let target = try buffer(at: address, length: MemoryLayout<T>.size)
    target.storeBytes(of: value.littleEndian, as: T.self)
    noteWrite(address, length: MemoryLayout<T>.size)
  }

  // MARK: Dirty pages

  /// Guest-physical addresses of pages written since the last call, region by region.
  /// Requires `map(into:logDirtyPages: true)`.
  public func dirtyPages(in vm: KVMVirtualMachine) throws(KVMError) -> [UInt64] {
    var pages: [UInt64] = []
    for region in regions {
      let pageCount = Int(region.size / Self.pageSize)
      let bitmap = try vm.dirtyLog(slot: region.slot, pageCount: pageCount)
      for (wordIndex, word) in bitmap.enumerated() where word != 0 {
        var remaining = word
        while remaining != 0 {
          let bit = remaining.trailingZeroBitCount
          remaining &= remaining - 1
          let page = UInt64(wordIndex * 64 + bit)
          pages.append(region.guestAddress + page * Self.pageSize)
        }
      }
    }
    return pages
  }
}

/// Guest RAM could not be set up.
public enum GuestMemoryAllocationError: Error, Equatable, CustomStringConvertible {
  case invalidRange(guestAddress: UInt64, size: UInt64)
  case mmapFailed(size: UInt64, errno: Int32)
  case copyFailed(errno: Int32)

  public var description: String {
    switch self {
    case .invalidRange(let address, let size):
      "invalid guest RAM range: \(size) bytes at 0x\(String(address, radix: 16)) (must be non-empty, page-aligned and non-overlapping)"
    case .mmapFailed(let size, let code):
      "could not reserve \(size) bytes of host memory for guest RAM: \(String(cString: strerror(code)))"
    case .copyFailed(let code):
      "could not copy guest RAM from the snapshot file: \(String(cString: strerror(code)))"
    }
  }
}
