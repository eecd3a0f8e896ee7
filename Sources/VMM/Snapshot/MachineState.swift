import Devices
import Foundation

/// A whole machine's state apart from its RAM: the configuration it was built from, every
/// vCPU, the in-kernel devices, and every registered device under its id. Encoded as JSON in
/// the snapshot file; decoded in two steps — the configuration first (to check it against
/// the machine asked for, before anything is built), then the rest into the built machine.
struct MachineState: Encodable {
  static let formatVersion = 1

  let configuration: VirtualMachineConfiguration
  let vcpus: [VCPUState]
  let kernel: KernelDeviceState
  let devices: DeviceRegistry

  enum Keys: String, CodingKey {
    case formatVersion, configuration, vcpus, kernel, devices
  }

  func encode(to encoder: any Encoder) throws {
    var container = encoder.container(keyedBy: Keys.self)
    try container.encode(Self.formatVersion, forKey: .formatVersion)
    try container.encode(configuration, forKey: .configuration)
    try container.encode(vcpus, forKey: .vcpus)
    try container.encode(kernel, forKey: .kernel)
    try devices.encodeStates(to: container.superEncoder(forKey: .devices))
  }

  func json() throws(VirtualMachineError) -> [UInt8] {
    do { return Array(try JSONEncoder().encode(self)) } catch {
      throw .snapshot("the machine's state cannot be encoded: \(error)")
    }
  }

  /// The part read before the machine is built.
  struct Header: Decodable {
    let formatVersion: Int
    let configuration: VirtualMachineConfiguration
  }

  /// The part read into the built machine; decoding it restores the devices.
  struct Body: Decodable {
    let vcpus: [VCPUState]
    let kernel: KernelDeviceState

    enum Keys: String, CodingKey {
      case vcpus, kernel, devices
    }

    init(from decoder: any Decoder) throws {
      let container = try decoder.container(keyedBy: Keys.self)
      vcpus = try container.decode([VCPUState].self, forKey: .vcpus)
      kernel = try container.decode(KernelDeviceState.self, forKey: .kernel)
      // With a registry, the devices are restored into it; without one, only read.
      if let registry = decoder.userInfo[Self.registryKey] as? DeviceRegistry {
        try registry.decodeStates(from: container.superDecoder(forKey: .devices))
      } else {
        _ = try container.superDecoder(forKey: .devices)
      }
    }

    static let registryKey = CodingUserInfoKey(rawValue: "skvm.deviceRegistry")!
  }

  static func header(_ json: [UInt8], path: String) throws(VirtualMachineError) -> Header {
    let header: Header
    do { header = try JSONDecoder().decode(Header.self, from: Data(json)) } catch {
      throw .snapshot("\(path): the machine's state cannot be read: \(Self.describe(error))")
    }
    guard header.formatVersion == formatVersion else {
      throw .snapshot("\(path): state format version \(header.formatVersion); this skvm reads \(formatVersion)")
    }
    return header
  }

  static func body(_ json: [UInt8], restoringInto registry: DeviceRegistry?, path: String)
    throws(VirtualMachineError) -> Body
  {
    let decoder = JSONDecoder()
    if let registry { decoder.userInfo[Body.registryKey] = registry }
    do { return try decoder.decode(Body.self, from: Data(json)) } catch let error as DeviceRegistryError {
      throw .snapshot("\(path): \(error)")
    } catch {
      throw .snapshot("\(path): the machine's state cannot be restored: \(Self.describe(error))")
    }
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
