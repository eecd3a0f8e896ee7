import Glibc
import KVM

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

  /// The regions, sorted by guest address, non-overlapping.
  public let regions: [Region]

  /// The total amount of guest RAM in bytes.
  public var totalSize: UInt64 { regions.reduce(0) { $0 + $1.size } }

  /// Allocates anonymous host memory for each `(guestAddress, size)` range.
  ///
  /// Memory is reserved lazily (`MAP_NORESERVE`): the host pays only for pages the guest touches.
  public init(ranges: [(guestAddress: UInt64, size: UInt64)]) throws(GuestMemoryAllocationError) {
    var regions: [Region] = []
    let sorted = ranges.sorted { $0.guestAddress < $1.guestAddress }
    for (slot, range) in sorted.enumerated() {
      guard range.size > 0, range.size % Self.pageSize == 0, range.guestAddress % Self.pageSize == 0,
        range.guestAddress <= UInt64.max - range.size,
        regions.last.map({ $0.end <= range.guestAddress }) ?? true
      else {
        Self.unmap(regions)
        throw GuestMemoryAllocationError.invalidRange(guestAddress: range.guestAddress, size: range.size)
      }
      let host = mmap(
        nil, Int(range.size), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0)
      guard let host, host != MAP_FAILED else {
        let code = errno
        Self.unmap(regions)
        throw GuestMemoryAllocationError.mmapFailed(size: range.size, errno: code)
      }
      regions.append(Region(guestAddress: range.guestAddress, size: range.size, slot: UInt32(slot), host: host))
    }
    self.regions = regions
  }

  deinit {
    Self.unmap(regions)
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
  }

  /// Copies `bytes` into guest memory at `address`.
  public func write(_ bytes: [UInt8], to address: UInt64) throws(GuestMemoryError) {
    let target = try buffer(at: address, length: bytes.count)
    target.copyBytes(from: bytes)
  }

  /// Reads `length` bytes at `address` into a new array.
  public func bytes(at address: UInt64, length: Int) throws(GuestMemoryError) -> [UInt8] {
    let source = try buffer(at: address, length: length)
    return Array(source)
  }

  /// Loads a little-endian integer at `address` (any alignment).
  @inline(__always)
  public func load<T: FixedWidthInteger>(_ type: T.Type, at address: UInt64) throws(GuestMemoryError) -> T {
    let source = try buffer(at: address, length: MemoryLayout<T>.size)
    return T(littleEndian: source.loadUnaligned(as: T.self))
  }

  /// Stores a little-endian integer at `address` (any alignment).
  @inline(__always)
  public func store<T: FixedWidthInteger>(_ value: T, at address: UInt64) throws(GuestMemoryError) {
    let target = try buffer(at: address, length: MemoryLayout<T>.size)
    target.storeBytes(of: value.littleEndian, as: T.self)
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

  public var description: String {
    switch self {
    case .invalidRange(let address, let size):
      "invalid guest RAM range: \(size) bytes at 0x\(String(address, radix: 16)) (must be non-empty, page-aligned and non-overlapping)"
    case .mmapFailed(let size, let code):
      "could not reserve \(size) bytes of host memory for guest RAM: \(String(cString: strerror(code)))"
    }
  }
}
