/// One thread's lock-free view of an `IOBus`, for the vCPU exit loop.
///
/// The view keeps its own copy of the bus's mappings and checks the bus's
/// version (one atomic load) on each access; only when the bus has changed does
/// it take the bus's lock to copy the mappings again. A device removed from the
/// bus stays alive until every view has refreshed.
public struct IOBusView {
  public let bus: IOBus
  private var version: UInt64
  private var mappings: [IOBus.Mapping]
  /// The mapping the last access hit: a guest mostly repeats an access (a status poll, a
  /// string of writes to one port), and one range check is cheaper than a search.
  private var lastHit = 0

  public init(_ bus: IOBus) {
    self.bus = bus
    (version, mappings) = bus.snapshot()
  }

  @inline(__always)
  private mutating func refreshIfChanged() {
    if bus.version.load(ordering: .acquiring) != version {
      (version, mappings) = bus.snapshot()
      lastHit = 0
    }
  }

  /// The index of the mapping containing `address`, if any: the last hit first, else a
  /// binary search of the sorted, non-overlapping mappings.
  @inline(__always)
  private mutating func index(of address: UInt64) -> Int? {
    refreshIfChanged()
    if lastHit < mappings.count, mappings[lastHit].contains(address) { return lastHit }
    guard let found = IOBus.index(of: address, in: mappings) else { return nil }
    lastHit = found
    return found
  }

  /// A guest read; `nil` when no device claims the address.
  @inline(__always)
  public mutating func read(_ address: UInt64, width: Int) -> UInt64? {
    guard let index = index(of: address) else { return nil }
    return mappings[index].device.read(offset: address &- mappings[index].base, width: width)
  }

  /// A guest write; false when no device claims the address.
  @inline(__always)
  public mutating func write(_ address: UInt64, width: Int, value: UInt64) -> Bool {
    guard let index = index(of: address) else { return false }
    mappings[index].device.write(offset: address &- mappings[index].base, width: width, value: value)
    return true
  }
}
