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

  public init(_ bus: IOBus) {
    self.bus = bus
    (version, mappings) = bus.snapshot()
  }

  @inline(__always)
  private mutating func refreshIfChanged() {
    if bus.version.load(ordering: .acquiring) != version { (version, mappings) = bus.snapshot() }
  }

  /// A guest read; `nil` when no device claims the address.
  @inline(__always)
  public mutating func read(_ address: UInt64, width: Int) -> UInt64? {
    refreshIfChanged()
    guard let (device, offset) = IOBus.lookup(address, in: mappings) else { return nil }
    return device.read(offset: offset, width: width)
  }

  /// A guest write; false when no device claims the address.
  @inline(__always)
  public mutating func write(_ address: UInt64, width: Int, value: UInt64) -> Bool {
    refreshIfChanged()
    guard let (device, offset) = IOBus.lookup(address, in: mappings) else { return false }
    device.write(offset: offset, width: width, value: value)
    return true
  }
}
