/// An inbound forward of user-mode networking: connections to a host address and port reach
/// a guest address and port. Written as QEMU's `hostfwd`:
/// `tcp:[HOSTADDR]:HOSTPORT-[GUESTADDR]:GUESTPORT` (or `udp:`); the host address defaults to
/// 127.0.0.1 (only this host can connect), the guest address to the one DHCP gives the guest.
public struct PortForward: Sendable, Equatable, Codable, CustomStringConvertible {
  /// TCP or UDP.
  public enum TransportProtocol: String, Sendable, Codable { case tcp, udp }

  public var transport: TransportProtocol
  /// Dotted IPv4 address the host listens on.
  public var hostAddress: String
  public var hostPort: UInt16
  /// Dotted IPv4 address inside the guest network.
  public var guestAddress: String
  public var guestPort: UInt16

  public init(
    transport: TransportProtocol = .tcp, hostAddress: String = "127.0.0.1", hostPort: UInt16,
    guestAddress: String = UserNetwork.guestAddress, guestPort: UInt16
  ) {
    self.transport = transport
    self.hostAddress = hostAddress
    self.hostPort = hostPort
    self.guestAddress = guestAddress
    self.guestPort = guestPort
  }

  /// Parses `hostfwd`'s value; the error says what is wrong with which part.
  public init(parsing text: String) throws(NetworkError) {
    let usage = "hostfwd=\(text): expected tcp:[HOSTADDR]:HOSTPORT-[GUESTADDR]:GUESTPORT (or udp:...)"
    let sides = text.split(separator: "-", omittingEmptySubsequences: false)
    guard sides.count == 2 else { throw NetworkError(usage) }
    let host = sides[0].split(separator: ":", omittingEmptySubsequences: false).map(String.init)
    let guest = sides[1].split(separator: ":", omittingEmptySubsequences: false).map(String.init)
    guard host.count == 2 || host.count == 3, guest.count == 2 else { throw NetworkError(usage) }
    let transportText = host.count == 3 ? host[0] : "tcp"
    guard let transport = TransportProtocol(rawValue: transportText.isEmpty ? "tcp" : transportText) else {
      throw NetworkError("hostfwd=\(text): '\(transportText)' is not tcp or udp")
    }
    let hostAddress = host[host.count - 2].isEmpty ? "127.0.0.1" : host[host.count - 2]
    let guestAddress = guest[0].isEmpty ? UserNetwork.guestAddress : guest[0]
    for address in [hostAddress, guestAddress] where UserNetwork.parseIPv4(address) == nil {
      throw NetworkError("hostfwd=\(text): '\(address)' is not an IPv4 address")
    }
    guard let hostPort = UInt16(host[host.count - 1]), hostPort > 0 else {
      throw NetworkError("hostfwd=\(text): host port '\(host[host.count - 1])' is not a number from 1 to 65535")
    }
    guard let guestPort = UInt16(guest[1]), guestPort > 0 else {
      throw NetworkError("hostfwd=\(text): guest port '\(guest[1])' is not a number from 1 to 65535")
    }
    self.init(
      transport: transport, hostAddress: hostAddress, hostPort: hostPort, guestAddress: guestAddress,
      guestPort: guestPort)
  }

  public var description: String {
    "\(transport.rawValue):\(hostAddress):\(hostPort)-\(guestAddress):\(guestPort)"
  }
}
