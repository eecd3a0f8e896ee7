import Devices
import KVM

#if canImport(FoundationEssentials)
  import FoundationEssentials
#else
  import Foundation
#endif

/// A whole machine's state apart from its RAM, in two JSON sections of the snapshot file: the
/// machine record (the configuration it was built from, every vCPU, the in-kernel devices) —
/// decoded once when the file is opened, so the configuration is checked before anything is
/// built — and every registered device under its id, decoded into the built machine.
struct MachineState {
  /// 2: KVM structs without their trailing zeros. Version 1 (whole structs) still reads.
  static let formatVersion = 2
  static let readableVersions = 1...formatVersion

  let record: MachineRecord
  let devices: DeviceRegistry

  /// The machine record and the devices section, as JSON.
  func json() throws(VirtualMachineError) -> (record: [UInt8], devices: [UInt8]) {
    do {
      let encoder = JSONEncoder()
      return (Array(try encoder.encode(record)), Array(try encoder.encode(DeviceStates(registry: devices))))
    } catch {
      throw .snapshot("the machine's state cannot be encoded: \(error)")
    }
  }

  /// Encodes and decodes a throwaway record of `configuration`'s shape (and encodes the
  /// devices' states, if given) so that a real save or restore soon after — a migration's
  /// switch-over, with the guest stopped — finds the coders' type metadata and protocol
  /// conformances resolved: the first use of each in a process costs milliseconds.
  static func warmUp(configuration: VirtualMachineConfiguration, devices: DeviceRegistry? = nil) {
    let empty = Base64Bytes([])
    let vcpu = VCPUState(
      id: 0, mpState: 0, registers: empty, specialRegisters: empty, xsave: empty, extendedControlRegisters: empty,
      debugRegisters: empty, localAPIC: empty, msrs: [MSREntry(index: 0, value: 0)], events: empty)
    let kernel = KernelDeviceState(
      interruptControllers: [empty], pit: empty, clock: 0, clockFlags: 0, clockRealtime: 0, savedAtNanoseconds: 0)
    let record = MachineRecord(
      formatVersion: formatVersion, configuration: configuration, vcpus: [vcpu], kernel: kernel)
    let encoder = JSONEncoder()
    if let json = try? encoder.encode(record) { _ = try? JSONDecoder().decode(MachineRecord.self, from: json) }
    if let devices { _ = try? encoder.encode(DeviceStates(registry: devices)) }
  }

  /// Restores every device in `registry` from a devices section.
  static func restoreDevices(_ json: [UInt8], into registry: DeviceRegistry, path: String) throws(VirtualMachineError) {
    let decoder = JSONDecoder()
    decoder.userInfo[DeviceStates.registryKey] = registry
    do { _ = try decoder.decode(DeviceStates.self, from: Data(json)) } catch let error as DeviceRegistryError {
      throw .snapshot("\(path): \(error)")
    } catch {
      throw .snapshot("\(path): the devices' state cannot be restored: \(describe(error))")
    }
  }

  /// The devices section: encodes the registry's states, decodes into the registry in `userInfo`.
  struct DeviceStates: Codable {
    let registry: DeviceRegistry?
    static let registryKey = CodingUserInfoKey(rawValue: "skvm.deviceRegistry")!

    init(registry: DeviceRegistry) { self.registry = registry }

    init(from decoder: any Decoder) throws {
      registry = decoder.userInfo[Self.registryKey] as? DeviceRegistry
      try registry?.decodeStates(from: decoder)
    }

    func encode(to encoder: any Encoder) throws { try registry?.encodeStates(to: encoder) }
  }

  /// A decoding error in one line, naming the field.
  static func describe(_ error: any Error) -> String {
    guard let error = error as? DecodingError else { return "\(error)" }
    func path(_ context: DecodingError.Context) -> String {
      context.codingPath.map { $0.intValue.map { "[\($0)]" } ?? $0.stringValue }.joined(separator: ".")
    }
    switch error {
    case .keyNotFound(let key, let context): return "'\(path(context)).\(key.stringValue)' is missing"
    case .typeMismatch(_, let context), .valueNotFound(_, let context): return "'\(path(context))' has the wrong type"
    case .dataCorrupted(let context): return "\(path(context)): \(context.debugDescription)"
    @unknown default: return "\(error)"
    }
  }
}

/// The machine record of a snapshot: what it was built from, its vCPUs, the in-kernel devices.
public struct MachineRecord: Codable, Sendable {
  public let formatVersion: Int
  public let configuration: VirtualMachineConfiguration
  public let vcpus: [VCPUState]
  public let kernel: KernelDeviceState

  static func decode(_ json: [UInt8], path: String) throws(VirtualMachineError) -> MachineRecord {
    let record: MachineRecord
    do { record = try JSONDecoder().decode(MachineRecord.self, from: Data(json)) } catch {
      throw .snapshot("\(path): the machine's state cannot be read: \(MachineState.describe(error))")
    }
    guard MachineState.readableVersions.contains(record.formatVersion) else {
      throw .snapshot(
        "\(path): state format version \(record.formatVersion); this skvm reads \(MachineState.formatVersion)")
    }
    return record
  }
}
