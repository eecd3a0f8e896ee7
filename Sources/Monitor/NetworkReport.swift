import JSON
import VMM

/// The NICs as QMP's `query-rx-filter` and HMP's `info network` describe them, and `set_link`.
enum NetworkReport {
  /// `query-rx-filter`: every NIC, or the one named (GenericError if there is none by that name).
  static func receiveFilters(_ interfaces: [NetworkInterface], name: String?) throws(QMPError) -> JSONValue {
    var chosen = interfaces
    if let name {
      chosen = interfaces.filter { $0.name == name }
      guard !chosen.isEmpty else { throw QMPError(.genericError, "invalid net client name: \(name)") }
    }
    return .array(
      chosen.map { interface in
        [
          "name": .string(interface.name),
          "promiscuous": .bool(interface.promiscuous),
          "multicast": .string(interface.allMulticast ? "all" : "normal"),
          "unicast": .string("normal"),
          "vlan": .string("none"),
          "broadcast-allowed": .bool(true),
          "multicast-overflow": .bool(interface.multicastOverflow),
          "unicast-overflow": .bool(interface.unicastOverflow),
          "main-mac": .string((interface.filterAddress ?? interface.macAddress).description),
          "vlan-table": .array([]),
          "unicast-table": .array(interface.unicastTable.map { .string($0.description) }),
          "multicast-table": .array(interface.multicastTable.map { .string($0.description) }),
        ]
      })
  }

  /// `set_link NAME up|down`: DeviceNotFound if there is no NIC by that name.
  static func setLink(_ machine: VirtualMachine, name: String, up: Bool) throws(QMPError) {
    guard machine.setLink(name, up: up) else {
      throw QMPError(.deviceNotFound, "Device '\(name)' not found")
    }
  }

  /// `info network`, laid out as QEMU's: each NIC, then its back end indented under it.
  static func text(_ interfaces: [NetworkInterface]) -> String {
    interfaces.enumerated().map { index, interface in
      let link = interface.linkUp ? "" : " (link down)"
      return
        "\(interface.name): index=\(index),type=nic,model=virtio-net-pci,macaddr=\(interface.macAddress)\(link)\r\n"
        + " \\ \(interface.name)-backend: index=\(index),type=\(interface.backend)\r\n"
        + "   rx: \(interface.receivePackets) packets, \(interface.receiveBytes) bytes, \(interface.receiveDropped) dropped;"
        + " tx: \(interface.transmitPackets) packets, \(interface.transmitBytes) bytes, \(interface.transmitDropped) dropped\r\n"
    }.joined()
  }
}
