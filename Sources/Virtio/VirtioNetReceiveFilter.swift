import Devices
import Network

/// Which frames a virtio-net device passes to the driver, as its control queue sets it
/// (virtio 1.2 §5.1.6.5): promiscuous and all-multicast modes and the MAC filter table.
/// A value with pure transitions, saved with the device.
public struct VirtioNetReceiveFilter: Sendable, Equatable, Codable {
  /// Every frame passes (the state after reset, as on QEMU, until the driver says otherwise).
  public var promiscuous = true
  /// Every multicast frame passes.
  public var allMulticast = false
  /// The device's own address (the driver may change it with CTRL_MAC_ADDR_SET).
  public var address: [UInt8]
  /// Extra unicast and multicast addresses from CTRL_MAC_TABLE_SET.
  public var unicastTable: [[UInt8]] = []
  public var multicastTable: [[UInt8]] = []

  /// Entries a MAC table may hold (QEMU keeps 64; more means "let them all through").
  public static let tableLimit = 64
  /// Set when a table overflowed: all of that kind pass.
  public var unicastOverflow = false
  public var multicastOverflow = false

  public init(address: MACAddress) { self.address = address.bytes }

  /// Checks a filter from a snapshot: six-byte addresses, tables no longer than the limit.
  public func validate() throws(DeviceStateError) {
    guard address.count == 6, address[0] & 1 == 0 else {
      throw DeviceStateError("the receive filter's address \(address) is not a unicast MAC address")
    }
    for (name, table) in [("unicast", unicastTable), ("multicast", multicastTable)] {
      guard table.count <= Self.tableLimit, table.allSatisfy({ $0.count == 6 }) else {
        throw DeviceStateError(
          "the receive filter's \(name) table has \(table.count) entries (at most \(Self.tableLimit) of 6 bytes each)")
      }
    }
  }

  /// Whether a frame with this destination (its first six bytes) reaches the driver.
  public func accepts(destination: UnsafeRawBufferPointer) -> Bool {
    if promiscuous { return true }
    let destination = Array(destination.prefix(6))
    guard destination.count == 6 else { return false }
    if destination[0] & 1 != 0 {
      if destination.allSatisfy({ $0 == 0xFF }) { return true }
      return allMulticast || multicastOverflow || multicastTable.contains(destination)
    }
    return destination == address || unicastOverflow || unicastTable.contains(destination)
  }

  /// Control-queue command classes and answers.
  enum Command {
    static let receiveClass: UInt8 = 0
    static let promiscuous: UInt8 = 0
    static let allMulticast: UInt8 = 1
    static let macClass: UInt8 = 1
    static let tableSet: UInt8 = 0
    static let addressSet: UInt8 = 1
    static let announceClass: UInt8 = 3
    static let announceAcknowledge: UInt8 = 0
    static let multiqueueClass: UInt8 = 4
    static let pairsSet: UInt8 = 0
  }

  /// Applies a receive-mode or MAC command (`data` is what follows class and command);
  /// false for a command it does not know or a malformed one (the driver gets VIRTIO_NET_ERR).
  public mutating func apply(class commandClass: UInt8, command: UInt8, data: [UInt8]) -> Bool {
    switch (commandClass, command) {
    case (Command.receiveClass, Command.promiscuous):
      guard data.count == 1 else { return false }
      promiscuous = data[0] != 0
    case (Command.receiveClass, Command.allMulticast):
      guard data.count == 1 else { return false }
      allMulticast = data[0] != 0
    case (Command.macClass, Command.addressSet):
      guard data.count == 6, data[0] & 1 == 0 else { return false }
      address = data
    case (Command.macClass, Command.tableSet):
      // Two tables: a 32-bit little-endian count, then that many 6-byte addresses; unicast first.
      var offset = 0
      var tables: [[[UInt8]]] = []
      var overflows: [Bool] = []
      for _ in 0..<2 {
        guard offset + 4 <= data.count else { return false }
        let count = data[offset..<offset + 4].reversed().reduce(0) { $0 << 8 | Int($1) }
        offset += 4
        guard count <= (data.count - offset) / 6 else { return false }
        let entries = (0..<count).map { Array(data[offset + 6 * $0..<offset + 6 * $0 + 6]) }
        offset += 6 * count
        overflows.append(entries.count > Self.tableLimit)
        tables.append(entries.count > Self.tableLimit ? [] : entries)
      }
      guard offset == data.count else { return false }
      unicastTable = tables[0]
      multicastTable = tables[1]
      unicastOverflow = overflows[0]
      multicastOverflow = overflows[1]
    default:
      return false
    }
    return true
  }
}
