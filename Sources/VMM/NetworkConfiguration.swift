import Network

/// A virtio-net NIC and the host back end it is connected to.
public struct NetworkConfiguration: Sendable, Equatable, Codable {
  /// Where the NIC's frames go on the host.
  public enum Backend: Sendable, Equatable, Codable {
    /// A tap interface by name (created if missing, which needs CAP_NET_ADMIN), optionally
    /// added to a Linux bridge.
    case tap(name: String, bridge: String?)
    /// An existing macvtap's character device (`/dev/tapN`).
    case macvtap(path: String)
    /// User-mode networking (libslirp): NAT, DHCP and DNS with no privileges, and inbound forwards.
    case user(forwards: [PortForward])
  }

  public var backend: Backend
  /// The guest's MAC address; nil: one generated from the VM's name and the NIC's index.
  public var macAddress: MACAddress?
  /// A tap's or macvtap's frames moved by the kernel's vhost-net instead of skvm's threads
  /// (skvm serves them itself, with a notice, where /dev/vhost-net cannot be used).
  public var vhost = false
  /// The MTU the guest's driver is told (68–65535); nil: not said (Linux then uses 1500).
  public var mtu: UInt16?
  /// Receive/transmit queue pairs (multiqueue tap or macvtap, one host queue each, and one
  /// vhost-net worker each with vhost=on): the guest's driver uses up to one per vCPU.
  public var queues = 1
  /// The most queue pairs a NIC may have.
  public static let maximumQueues = 16

  public init(backend: Backend, macAddress: MACAddress? = nil, vhost: Bool = false) {
    self.backend = backend
    self.macAddress = macAddress
    self.vhost = vhost
  }

  private enum CodingKeys: String, CodingKey {
    case backend, macAddress, vhost, mtu, queues
  }

  /// Decodes a configuration; one saved before multiqueue (no `queues`) has one queue pair.
  public init(from decoder: any Decoder) throws {
    let container = try decoder.container(keyedBy: CodingKeys.self)
    backend = try container.decode(Backend.self, forKey: .backend)
    macAddress = try container.decodeIfPresent(MACAddress.self, forKey: .macAddress)
    vhost = try container.decodeIfPresent(Bool.self, forKey: .vhost) ?? false
    mtu = try container.decodeIfPresent(UInt16.self, forKey: .mtu)
    queues = try container.decodeIfPresent(Int.self, forKey: .queues) ?? 1
    guard (1...Self.maximumQueues).contains(queues) else {
      throw DecodingError.dataCorruptedError(
        forKey: .queues, in: container, debugDescription: "queues=\(queues) is not from 1 to \(Self.maximumQueues)")
    }
  }

  /// User networking with no forwards: what `skvm run` gives a Linux guest by default.
  public static let user = NetworkConfiguration(backend: .user(forwards: []))

  /// The syntax `--net` takes.
  public static let syntax =
    "tap,ifname=NAME[,bridge=BR][,vhost=on][,queues=N][,mac=MAC] | macvtap,path=/dev/tapN[,vhost=on][,queues=N][,mac=MAC] | user[,hostfwd=tcp:[HOSTADDR]:PORT-:GUESTPORT]...[,mac=MAC] | none; any NIC: [,mtu=N]"

  /// Parses `--net`'s value (not `none`, which the caller handles).
  public init(parsing text: String) throws(OptionList.ParseError) {
    let list = try OptionList(parsing: text, repeatable: ["hostfwd"])
    var mac: MACAddress?
    var mtu: UInt16?
    var queues = 1
    var others: [(key: String, value: String)] = []
    for (key, value) in list.options {
      if key == "mtu" {
        guard let number = UInt16(value), number >= 68 else {
          throw OptionList.ParseError(description: "--net \(text): mtu=\(value) is not a number from 68 to 65535")
        }
        mtu = number
      } else if key == "queues" {
        guard let number = Int(value), (1...Self.maximumQueues).contains(number) else {
          throw OptionList.ParseError(
            description: "--net \(text): queues=\(value) is not a number from 1 to \(Self.maximumQueues)")
        }
        queues = number
      } else if key == "mac" {
        guard let address = MACAddress(value) else {
          throw OptionList.ParseError(
            description: "--net \(text): '\(value)' is not a MAC address (like 52:54:00:12:34:56)")
        }
        guard !address.isMulticast, !address.isZero else {
          throw OptionList.ParseError(
            description:
              "--net \(text): \(address) is a \(address.isZero ? "zero" : "multicast") address; a NIC needs a unicast one (the first byte even, like 52:54:00:12:34:56)"
          )
        }
        mac = address
      } else {
        others.append((key, value))
      }
    }
    func unknown(_ key: String, _ value: String, _ accepted: String) -> OptionList.ParseError {
      OptionList.ParseError(description: "--net \(text): unknown option '\(key)=\(value)' (\(accepted))")
    }
    switch list.main {
    case "tap":
      var name: String?
      var bridge: String?
      var vhost = false
      for (key, value) in others {
        switch key {
        case "ifname": name = value
        case "bridge", "br": bridge = value
        case "vhost" where value == "on" || value == "off": vhost = value == "on"
        case "vhost":
          throw OptionList.ParseError(description: "--net \(text): vhost=\(value): expected on or off")
        default: throw unknown(key, value, "ifname=NAME, bridge=BR, vhost=on|off, queues=N, mac=MAC, mtu=N")
        }
      }
      guard let name, !name.isEmpty else {
        throw OptionList.ParseError(description: "--net \(text): a tap needs ifname=NAME (e.g. tap,ifname=tap0)")
      }
      self.init(backend: .tap(name: name, bridge: bridge), macAddress: mac, vhost: vhost)
    case "macvtap":
      var path: String?
      var vhost = false
      for (key, value) in others {
        switch (key, value) {
        case ("path", _): path = value
        case ("vhost", "on"), ("vhost", "off"): vhost = value == "on"
        default: throw unknown(key, value, "path=/dev/tapN, vhost=on|off, queues=N, mac=MAC, mtu=N")
        }
      }
      guard let path, !path.isEmpty else {
        throw OptionList.ParseError(description: "--net \(text): a macvtap needs path=/dev/tapN")
      }
      self.init(backend: .macvtap(path: path), macAddress: mac, vhost: vhost)
    case "user":
      var forwards: [PortForward] = []
      for (key, value) in others {
        guard key == "hostfwd" else {
          throw unknown(key, value, "hostfwd=tcp:[HOSTADDR]:PORT-:GUESTPORT, mac=MAC, mtu=N")
        }
        do { forwards.append(try PortForward(parsing: value)) } catch {
          throw OptionList.ParseError(description: "--net \(text): \(error.description)")
        }
      }
      guard queues == 1 else {
        throw OptionList.ParseError(
          description:
            "--net \(text): user networking has one queue pair (libslirp is single-threaded); queues= is for tap and macvtap"
        )
      }
      self.init(backend: .user(forwards: forwards), macAddress: mac)
    default:
      throw OptionList.ParseError(
        description: "--net \(text): unknown back end '\(list.main)' (expected \(Self.syntax))")
    }
    self.mtu = mtu
    self.queues = queues
  }

  /// Opens the back end, one per queue pair (the error says what was wrong and what to do).
  func open() throws(NetworkError) -> [any NetworkBackend] {
    switch backend {
    case .tap(let name, let bridge): return try TapBackend.open(name: name, bridge: bridge, queues: queues)
    case .macvtap(let path): return try TapBackend.openMacvtap(path: path, queues: queues)
    case .user(let forwards): return [try UserNetwork(forwards: forwards)]
    }
  }

  /// What the NIC is connected to, as `info network` shows it.
  public var backendDescription: String {
    switch backend {
    case .tap(let name, let bridge):
      "tap,ifname=\(name)" + (bridge.map { ",bridge=\($0)" } ?? "") + (vhost ? ",vhost=on" : "")
        + (queues > 1 ? ",queues=\(queues)" : "")
    case .macvtap(let path):
      "macvtap,path=\(path)" + (vhost ? ",vhost=on" : "") + (queues > 1 ? ",queues=\(queues)" : "")
    case .user(let forwards): (["user"] + forwards.map { "hostfwd=\($0)" }).joined(separator: ",")
    }
  }
}

/// A NIC's back end opened before any KVM object exists, with its MAC address settled.
struct OpenedNetwork {
  let configuration: NetworkConfiguration
  /// One per queue pair.
  let backends: [any NetworkBackend]
  let macAddress: MACAddress

  /// Opens every NIC's back end in order; the first that fails closes the others and names its NIC.
  /// Two NICs with one MAC address are refused.
  static func openAll(_ networks: [NetworkConfiguration], machineName: String) throws(VirtualMachineError)
    -> [OpenedNetwork]
  {
    let addresses = networks.enumerated().map { index, network in
      network.macAddress ?? MACAddress.generated(name: machineName, index: index)
    }
    for (index, address) in addresses.enumerated() where addresses[..<index].contains(address) {
      throw .network(
        index: index,
        reason:
          "MAC address \(address) is already used by NIC \(addresses.firstIndex(of: address) ?? 0); give each NIC its own mac="
      )
    }
    var opened: [OpenedNetwork] = []
    for (index, network) in networks.enumerated() {
      do {
        opened.append(OpenedNetwork(configuration: network, backends: try network.open(), macAddress: addresses[index]))
      } catch {
        for done in opened { for backend in done.backends { backend.close() } }
        throw .network(index: index, reason: error.description)
      }
    }
    return opened
  }
}
