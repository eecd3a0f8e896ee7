import Synchronization

/// An address space (port I/O or MMIO) divided into ranges, each served by one device.
///
/// Ranges may be added and removed while vCPUs run (PCI BARs move when the
/// guest programs them). The vCPU exit loops look devices up through an
/// `IOBusView`, which takes no lock unless the bus changed since its last lookup.
public final class IOBus: Sendable {
  /// One registered range.
  public struct Mapping: Sendable {
    public let base: UInt64
    public let size: UInt64
    public let device: any IODevice

    @inline(__always)
    func contains(_ address: UInt64) -> Bool { address >= base && address - base < size }
  }

  /// What this bus carries, for messages.
  public let kind: Kind
  private let mappings = Mutex<[Mapping]>([])
  /// Bumped after every change, so views know when to refresh.
  let version = Atomic<UInt64>(0)

  /// The two x86 address spaces.
  public enum Kind: String, Sendable {
    case port = "port I/O"
    case mmio = "MMIO"

    /// The highest address of the space.
    public var limit: UInt64 { self == .port ? 0xFFFF : UInt64.max }
  }

  public init(kind: Kind) {
    self.kind = kind
  }

  /// Adds `device` at `[base, base + size)`; fails if that overlaps a range already taken.
  public func register(_ device: any IODevice, base: UInt64, size: UInt64) throws(IOBusError) {
    guard size > 0, base <= UInt64.max - (size - 1) else {
      throw IOBusError.invalidRange(kind: kind, base: base, size: size, device: device.name)
    }
    try mappings.withLock { (list) throws(IOBusError) in
      let last = base + (size - 1)
      if let clash = list.first(where: { $0.base <= last && base <= $0.base + ($0.size - 1) }) {
        throw IOBusError.overlap(
          IOBusError.Overlap(
            kind: kind, base: base, size: size, device: device.name, existing: clash.device.name,
            existingBase: clash.base, existingSize: clash.size,
            freeNearby: Self.freeRanges(in: list, limit: kind.limit, fitting: size, near: base)))
      }
      let position = list.firstIndex { $0.base > base } ?? list.endIndex
      list.insert(Mapping(base: base, size: size, device: device), at: position)
      version.add(1, ordering: .releasing)
    }
  }

  /// Removes the range starting at `base`, if any; returns whether one was removed.
  @discardableResult
  public func unregister(base: UInt64) -> Bool {
    mappings.withLock { list in
      guard let position = list.firstIndex(where: { $0.base == base }) else { return false }
      list.remove(at: position)
      version.add(1, ordering: .releasing)
      return true
    }
  }

  /// The device serving `address` and the offset within its range.
  public func resolve(_ address: UInt64) -> (device: any IODevice, offset: UInt64)? {
    mappings.withLock { Self.lookup(address, in: $0) }
  }

  /// The current mappings and the version they belong to.
  func snapshot() -> (version: UInt64, mappings: [Mapping]) {
    mappings.withLock { (version.load(ordering: .acquiring), $0) }
  }

  /// Binary search for the mapping containing `address` in a sorted, non-overlapping list.
  @inline(__always)
  static func lookup(_ address: UInt64, in list: [Mapping]) -> (device: any IODevice, offset: UInt64)? {
    index(of: address, in: list).map { (list[$0].device, address - list[$0].base) }
  }

  /// Binary search for the index of the mapping containing `address` in a sorted,
  /// non-overlapping list.
  @inline(__always)
  static func index(of address: UInt64, in list: [Mapping]) -> Int? {
    var low = 0
    var high = list.count
    while low < high {
      let middle = (low &+ high) >> 1
      if list[middle].base <= address { low = middle &+ 1 } else { high = middle }
    }
    guard low > 0, list[low &- 1].contains(address) else { return nil }
    return low &- 1
  }

  /// A guest read; `nil` when no device claims the address.
  public func read(_ address: UInt64, width: Int) -> UInt64? {
    guard let (device, offset) = resolve(address) else { return nil }
    return device.read(offset: offset, width: width)
  }

  /// A guest write; false when no device claims the address.
  public func write(_ address: UInt64, width: Int, value: UInt64) -> Bool {
    guard let (device, offset) = resolve(address) else { return false }
    device.write(offset: offset, width: width, value: value)
    return true
  }

  /// Every registered range, in address order.
  public var allMappings: [Mapping] { mappings.withLock { $0 } }

  /// The free ranges of at least `size` bytes nearest to `address`: the closest one below it
  /// and the closest one above it (fewer where there are none).
  public func freeRanges(fitting size: UInt64, near address: UInt64) -> [ClosedRange<UInt64>] {
    mappings.withLock { Self.freeRanges(in: $0, limit: kind.limit, fitting: size, near: address) }
  }

  static func freeRanges(in list: [Mapping], limit: UInt64, fitting size: UInt64, near address: UInt64)
    -> [ClosedRange<UInt64>]
  {
    var gaps: [ClosedRange<UInt64>] = []
    var next: UInt64? = 0  // the first address not yet covered; nil past the end of the space
    for mapping in list {
      if let start = next, mapping.base > start { gaps.append(start...(mapping.base - 1)) }
      let end = mapping.base + (mapping.size - 1)
      next = end < limit ? end + 1 : nil
    }
    if let start = next, start <= limit { gaps.append(start...limit) }
    let fitting = gaps.filter { $0.upperBound - $0.lowerBound >= max(size, 1) - 1 }
    let below = fitting.last { $0.lowerBound <= address }
    let above = fitting.first { $0.lowerBound > address }
    return [below, above].compactMap { $0 }
  }
}

/// A device could not be placed on a bus.
public enum IOBusError: Error, Equatable, CustomStringConvertible {
  case invalidRange(kind: IOBus.Kind, base: UInt64, size: UInt64, device: String)
  case overlap(Overlap)

  /// Where a new device clashed with one already on the bus, and what is free nearby.
  public struct Overlap: Equatable, Sendable {
    public let kind: IOBus.Kind
    public let base: UInt64
    public let size: UInt64
    public let device: String
    public let existing: String
    public let existingBase: UInt64
    public let existingSize: UInt64
    /// The nearest free ranges (below and above) that the new device would fit in.
    public let freeNearby: [ClosedRange<UInt64>]
  }

  public var description: String {
    switch self {
    case .invalidRange(let kind, let base, let size, let device):
      return "\(device): invalid \(kind.rawValue) range of \(size) bytes at \(hex(base))"
    case .overlap(let clash):
      let existingEnd = clash.existingBase + (clash.existingSize - 1)
      let free =
        clash.freeNearby.isEmpty
        ? "no free range of that size is left"
        : "free ranges nearby: "
          + clash.freeNearby.map { "\(hex($0.lowerBound))-\(hex($0.upperBound))" }.joined(separator: ", ")
      return
        "\(clash.device): \(clash.kind.rawValue) range of \(clash.size) bytes at \(hex(clash.base)) overlaps \(clash.existing) at \(hex(clash.existingBase))-\(hex(existingEnd)); \(free)"
    }
  }
}

private func hex(_ value: UInt64) -> String { "0x" + String(value, radix: 16) }
