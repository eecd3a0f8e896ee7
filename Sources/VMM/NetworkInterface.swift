import Network
import Virtio

/// One NIC as the monitor and embedders see it: its name (`net0`, …), address, back end,
/// link and receive filter, and traffic counters.
public struct NetworkInterface: Sendable, Equatable {
  /// `net0` for the first `--net`, and so on.
  public var name: String
  public var macAddress: MACAddress
  /// What it is connected to, as given (`user`, `tap,ifname=tap0`, …).
  public var backend: String
  public var linkUp: Bool
  /// The receive filter the guest's driver set.
  public var promiscuous: Bool
  public var allMulticast: Bool
  public var unicastOverflow: Bool
  public var multicastOverflow: Bool
  /// The address the driver filters on (it may have changed it).
  public var filterAddress: MACAddress?
  public var unicastTable: [MACAddress]
  public var multicastTable: [MACAddress]
  public var receivePackets: Int
  public var receiveBytes: Int
  public var receiveDropped: Int
  public var transmitPackets: Int
  public var transmitBytes: Int
  public var transmitDropped: Int

  init(name: String, device: VirtioNet, configuration: NetworkConfiguration) {
    let filter = device.receiveFilter
    let counts = device.statistics
    self.name = name
    macAddress = device.macAddress
    backend = configuration.backendDescription
    linkUp = device.isLinkUp
    promiscuous = filter.promiscuous
    allMulticast = filter.allMulticast
    unicastOverflow = filter.unicastOverflow
    multicastOverflow = filter.multicastOverflow
    filterAddress = MACAddress(bytes: filter.address)
    unicastTable = filter.unicastTable.compactMap { MACAddress(bytes: $0) }
    multicastTable = filter.multicastTable.compactMap { MACAddress(bytes: $0) }
    receivePackets = counts.receivePackets.load(ordering: .relaxed)
    receiveBytes = counts.receiveBytes.load(ordering: .relaxed)
    receiveDropped = counts.receiveDropped.load(ordering: .relaxed)
    transmitPackets = counts.transmitPackets.load(ordering: .relaxed)
    transmitBytes = counts.transmitBytes.load(ordering: .relaxed)
    transmitDropped = counts.transmitDropped.load(ordering: .relaxed)
  }
}

extension VirtualMachine {
  /// What did not go as configured but did not stop the machine (vhost=on without a usable
  /// /dev/vhost-net: skvm moves that NIC's frames itself), one sentence each.
  public var setupNotices: [String] { pci?.notices ?? [] }

  /// Whether NIC `name`'s frames are moved by the kernel's vhost-net now.
  public func usesVhost(_ name: String) -> Bool {
    (pci?.networks ?? []).enumerated().contains { "net\($0.offset)" == name && $0.element.device.isOffloaded }
  }

  /// The NICs, in `--net` order.
  public var networkInterfaces: [NetworkInterface] {
    (pci?.networks ?? []).enumerated().map { index, network in
      NetworkInterface(name: "net\(index)", device: network.device, configuration: network.configuration)
    }
  }

  /// Sets NIC `name`'s link up or down (the guest sees its carrier change); false if there is no such NIC.
  @discardableResult
  public func setLink(_ name: String, up: Bool) -> Bool {
    guard let network = (pci?.networks ?? []).enumerated().first(where: { "net\($0.offset)" == name }) else {
      return false
    }
    network.element.device.setLink(up: up)
    return true
  }
}
