import Synchronization

/// Every device of a machine, each registered once under a stable id ("serial0", "i8042",
/// "virtio-blk0", …): what snapshots save and restore, and what statistics and the monitor's
/// summaries enumerate. Adding a device is one file and one `register` call.
public final class DeviceRegistry: @unchecked Sendable {
  /// One registered device.
  public struct Entry: Sendable {
    /// The stable id snapshots name the device by.
    public let id: String
    /// What kind of device it is, for people ("16550A UART", "virtio-blk over PCI").
    public let kind: String
    /// The device's state version.
    public let stateVersion: Int
    /// One line of figures for `--stats`, if the device keeps any.
    public let statistics: @Sendable () -> String?
    /// Whether a snapshot made before this device existed may lack it (it then keeps its
    /// power-on state): for devices added to every machine later whose state matters little.
    public let addedLater: Bool
    let encode: @Sendable (any Encoder) throws -> Void
    let decode: @Sendable (any Decoder) throws -> Void
  }

  private let entries = Mutex<[Entry]>([])

  public init() {}

  /// Registers `device` under `id`; an id may be used once. With `addedLater`, snapshots
  /// without it still restore (see `Entry.addedLater`).
  public func register<Device: StatefulDevice>(
    _ device: Device, id: String, kind: String, addedLater: Bool = false,
    statistics: @escaping @Sendable () -> String? = { nil }
  ) throws(DeviceRegistryError) {
    let entry = Entry(
      id: id, kind: kind, stateVersion: Device.stateVersion, statistics: statistics, addedLater: addedLater,
      encode: { encoder in try device.saveState().encode(to: encoder) },
      decode: { decoder in
        let state = try Device.State(from: decoder)
        do throws(DeviceStateError) { try device.restoreState(state) } catch {
          throw DeviceRegistryError.invalidState(id: id, error.description)
        }
      })
    try entries.withLock { (entries: inout [Entry]) throws(DeviceRegistryError) in
      guard !entries.contains(where: { $0.id == id }) else { throw .duplicateID(id) }
      entries.append(entry)
    }
  }

  /// The registered devices, in registration order.
  public var all: [Entry] { entries.withLock { $0 } }

  /// Each device's `--stats` line, for those that keep figures.
  public var statisticsLines: [String] { all.compactMap { $0.statistics() } }

  /// Encodes every device's state: an object keyed by id, each `{"version": V, "state": …}`.
  public func encodeStates(to encoder: any Encoder) throws {
    var container = encoder.container(keyedBy: DeviceKey.self)
    for entry in all {
      var record = container.nestedContainer(keyedBy: RecordKey.self, forKey: DeviceKey(entry.id))
      try record.encode(entry.stateVersion, forKey: .version)
      try entry.encode(record.superEncoder(forKey: .state))
    }
  }

  /// Restores every device from what `encodeStates` wrote. The set of ids (but for devices
  /// added later, which may be absent) and each version must match this machine's exactly;
  /// the error names what differs.
  public func decodeStates(from decoder: any Decoder) throws {
    let container = try decoder.container(keyedBy: DeviceKey.self)
    let saved = Set(container.allKeys.map(\.stringValue))
    let ours = all
    let missing = ours.filter { !$0.addedLater }.map(\.id).filter { !saved.contains($0) }
    let unexpected = saved.subtracting(ours.map(\.id)).sorted()
    guard missing.isEmpty && unexpected.isEmpty else {
      throw DeviceRegistryError.deviceSetDiffers(missing: missing, unexpected: unexpected)
    }
    for entry in ours where saved.contains(entry.id) {
      let record = try container.nestedContainer(keyedBy: RecordKey.self, forKey: DeviceKey(entry.id))
      let version = try record.decode(Int.self, forKey: .version)
      guard version == entry.stateVersion else {
        throw DeviceRegistryError.versionMismatch(id: entry.id, saved: version, supported: entry.stateVersion)
      }
      try entry.decode(record.superDecoder(forKey: .state))
    }
  }

  private struct DeviceKey: CodingKey {
    let stringValue: String
    init(_ value: String) { stringValue = value }
    init?(stringValue: String) { self.stringValue = stringValue }
    var intValue: Int? { nil }
    init?(intValue: Int) { nil }
  }

  private enum RecordKey: String, CodingKey {
    case version, state
  }
}

/// Registering or restoring devices failed.
public enum DeviceRegistryError: Error, CustomStringConvertible, Equatable {
  case duplicateID(String)
  case deviceSetDiffers(missing: [String], unexpected: [String])
  case versionMismatch(id: String, saved: Int, supported: Int)
  case invalidState(id: String, String)

  public var description: String {
    switch self {
    case .duplicateID(let id): "two devices are registered as '\(id)'"
    case .deviceSetDiffers(let missing, let unexpected):
      "the saved machine has other devices than this one"
        + (missing.isEmpty ? "" : ": \(missing.joined(separator: ", ")) not in the snapshot")
        + (unexpected.isEmpty
          ? "" : "; the snapshot has \(unexpected.joined(separator: ", ")) which this machine lacks")
        + " (run it with the same --disk, --console and --rng options it was saved with)"
    case .versionMismatch(let id, let saved, let supported):
      "\(id): the snapshot has state version \(saved); this skvm reads version \(supported)"
    case .invalidState(let id, let reason): "\(id): \(reason)"
    }
  }
}
