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
        throw IOBusError.overlap(kind: kind, base: base, size: size, device: device.name, existing: clash.device.name)
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
    var low = 0
    var high = list.count
    while low < high {
      let middle = (low + high) / 2
      if list[middle].base <= address { low = middle + 1 } else { high = middle }
    }
    guard low > 0 else { return nil }
    let mapping = list[low - 1]
    return mapping.contains(address) ? (mapping.device, address - mapping.base) : nil
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
}

/// A device could not be placed on a bus.
public enum IOBusError: Error, Equatable, CustomStringConvertible {
  case invalidRange(kind: IOBus.Kind, base: UInt64, size: UInt64, device: String)
  case overlap(kind: IOBus.Kind, base: UInt64, size: UInt64, device: String, existing: String)

  public var description: String {
    switch self {
    case .invalidRange(let kind, let base, let size, let device):
      "\(device): invalid \(kind.rawValue) range of \(size) bytes at 0x\(String(base, radix: 16))"
    case .overlap(let kind, let base, let size, let device, let existing):
      "\(device): \(kind.rawValue) range of \(size) bytes at 0x\(String(base, radix: 16)) overlaps \(existing)"
    }
  }
}
