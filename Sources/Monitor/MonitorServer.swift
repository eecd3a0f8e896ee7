import Glibc
import Synchronization
import VMM

/// A QMP monitor for one managed machine, on one or more sockets, serving several
/// clients at once, each on threads of its own (never a vCPU thread).
///
/// ```swift
/// let server = try MonitorServer(addresses: [try MonitorAddress(parsing: "unix:/tmp/vm.qmp")])
/// server.attach(to: managed)
/// try server.start()
/// defer { server.close() }
/// ```
///
/// The sockets are opened by `init`, before a machine exists, so a bad address fails before
/// `/dev/kvm` is touched. Clients are untrusted: each request is bounded in size and nesting;
/// replies and events wait in a bounded queue per client and a client that falls too far
/// behind is cut off (nobody else waits for it); a client must negotiate capabilities within
/// `handshakeSeconds`; at most `maximumClients` are served at once, and when that many are
/// connected a newcomer displaces the oldest that has not negotiated. Unix sockets are made
/// mode 0600 whatever the umask. Nothing a client sends can stop the guest except the
/// commands meant to.
public final class MonitorServer: @unchecked Sendable {
  /// Clients served at once; more are told so and disconnected.
  public static let maximumClients = 32
  /// Clients from one TCP address at once.
  public static let maximumClientsPerAddress = 8
  /// The longest request accepted, in bytes; a longer one disconnects the client.
  public static let maximumRequestSize = 1 << 20
  /// How long a client may take to send `qmp_capabilities`.
  public static let defaultHandshakeSeconds = 10.0

  private let listeners: [MonitorListener]
  private let addresses: [MonitorAddress]
  private let handshakeSeconds: Double
  private let dispatch = QMPDispatch()
  private let clients = Mutex<[ObjectIdentifier: MonitorClient]>([:])
  private let firstClient = ConditionLock()
  private var sawClient = false
  private var acceptThreads: [OSThread] = []

  /// Opens every socket (failing before anything runs if one cannot be opened, or if two
  /// addresses name the same socket).
  public init(addresses: [MonitorAddress], handshakeSeconds: Double = defaultHandshakeSeconds)
    throws(MonitorError)
  {
    for (index, address) in addresses.enumerated()
    where addresses[..<index].contains(where: { $0.endpoint == address.endpoint }) {
      throw MonitorError(description: "monitor address \(address) is given twice; give each socket once")
    }
    var opened: [MonitorListener] = []
    for address in addresses {
      do {
        opened.append(try MonitorListener(address))
      } catch {
        for listener in opened { listener.close() }
        throw MonitorError(description: error.description)
      }
    }
    listeners = opened
    self.addresses = addresses
    self.handshakeSeconds = handshakeSeconds
  }

  /// Opens the sockets and attaches `machine` (see `attach`).
  public convenience init(addresses: [MonitorAddress], machine: ManagedMachine, serialBackend: String = "stdio")
    throws(MonitorError)
  {
    try self.init(addresses: addresses)
    attach(to: machine, serialBackend: serialBackend)
  }

  /// Makes `machine` the one the monitor drives, and its events the ones clients receive.
  /// Call once: before `start()`, or after `awaitIncoming` once the machine has arrived
  /// (clients already connected then drive it too).
  public func attach(to machine: ManagedMachine, serialBackend: String = "stdio") {
    dispatch.use(QMPCommands(machine: machine, monitorAddresses: addresses, serialBackend: serialBackend))
    machine.addEventListener { [weak self] event in self?.broadcast(QMPMessage.event(event)) }
  }

  /// Serves a destination that waits for QMP `migrate-incoming` (`--incoming defer`) until
  /// `attach` hands over the machine; the incoming migration's `MIGRATION` events go to clients.
  public func awaitIncoming(_ incoming: DeferredIncoming) {
    dispatch.use(IncomingQMPCommands(incoming: incoming))
    incoming.observe { [weak self] status in self?.broadcast(QMPMessage.event(.migration(status))) }
  }

  /// Starts accepting clients.
  public func start() throws(MonitorError) {
    guard dispatch.isReady else { throw MonitorError(description: "the monitor has no machine to drive") }
    let commands = dispatch
    for listener in listeners {
      do {
        acceptThreads.append(try OSThread(name: "qmp-accept") { [self] in acceptLoop(listener, commands) })
      } catch {
        throw MonitorError(description: error.description)
      }
    }
  }

  /// Whether an address asked for `wait=on` (the guest waits for the first client).
  public var waitsForClient: Bool { addresses.contains(where: \.waitForClient) }

  /// Blocks until a client connects, if an address asked for `wait=on`; returns at once otherwise.
  public func waitForClientIfAsked() {
    guard waitsForClient else { return }
    firstClient.withLock { firstClient.wait { sawClient } }
  }

  /// Closes the sockets (removing socket files) and disconnects every client, once what was
  /// queued for it (the last events) is sent — half a second at most for one that does not read.
  public func close() {
    for listener in listeners { listener.close() }
    for thread in acceptThreads { thread.join() }
    for client in clients.withLock({ Array($0.values) }) { client.disconnectAfterSending(within: 0.5) }
  }

  private func acceptLoop(_ listener: MonitorListener, _ commands: QMPDispatch) {
    while let fd = listener.accept() {
      let peer = MonitorPeer(socket: fd)
      let client = MonitorClient(fd: fd, session: QMPSession(commands: commands), peer: peer)
      let admitted: MonitorClient
      switch admit(client) {
      case .refused(let reason):
        Self.refuse(fd, reason)
        continue
      case .admitted(let displaced):
        displaced?.disconnect()
        admitted = client
      }
      firstClient.withLock {
        sawClient = true
        firstClient.broadcast()
      }
      do {
        _ = try OSThread(name: "qmp-client") { [self] in
          admitted.serve(maximumRequestSize: Self.maximumRequestSize, handshakeSeconds: handshakeSeconds)
          _ = clients.withLock { $0.removeValue(forKey: ObjectIdentifier(admitted)) }
        }
      } catch {
        _ = clients.withLock { $0.removeValue(forKey: ObjectIdentifier(admitted)) }
        client.disconnect()
        Glibc.close(fd)
      }
    }
  }

  /// Decides whether `client` is served: within the limits it is; at the overall limit it
  /// displaces the oldest client that has not negotiated yet, if any.
  private func admit(_ client: MonitorClient) -> Admission {
    clients.withLock { clients in
      if case .address(let host) = client.peer,
        clients.values.filter({ $0.peer == client.peer }).count >= Self.maximumClientsPerAddress
      {
        return .refused("too many monitor clients from \(host) (\(Self.maximumClientsPerAddress))")
      }
      var displaced: MonitorClient?
      if clients.count >= Self.maximumClients {
        guard
          let oldest = clients.values.filter({ !$0.hasNegotiated }).min(by: { $0.connectedAt < $1.connectedAt })
        else { return .refused("too many monitor clients (\(Self.maximumClients))") }
        clients.removeValue(forKey: ObjectIdentifier(oldest))
        displaced = oldest
      }
      clients[ObjectIdentifier(client)] = client
      return .admitted(displacing: displaced)
    }
  }

  private enum Admission {
    case admitted(displacing: MonitorClient?)
    case refused(String)
  }

  /// Tells a connection it is not served (without waiting for it) and closes it.
  private static func refuse(_ fd: Int32, _ reason: String) {
    let data = QMPMessage.encode(["error": QMPError(.genericError, reason).json])
    _ = data.withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL | MSG_DONTWAIT)) }
    shutdown(fd, Int32(SHUT_RDWR))
    Glibc.close(fd)
  }

  private func broadcast(_ message: [UInt8]) {
    for client in clients.withLock({ Array($0.values) }) { client.sendEvent(message) }
  }
}

/// A monitor could not be set up.
public struct MonitorError: Error, CustomStringConvertible {
  public let description: String
}
