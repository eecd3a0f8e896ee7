import Foundation
import Glibc
import Synchronization
import VMM

/// A QMP monitor for one managed machine, on one or more sockets, serving several
/// clients at once, each on its own thread (never a vCPU thread).
///
/// ```swift
/// let server = try MonitorServer(addresses: [try MonitorAddress(parsing: "unix:/tmp/vm.qmp")], machine: managed)
/// server.start()
/// defer { server.close() }
/// ```
///
/// Clients are untrusted: each request is bounded in size and nesting, a reply that
/// cannot be delivered within a few seconds disconnects the client, and at most
/// `maximumClients` are served at once. Nothing a client sends can stop the guest
/// except the commands meant to.
public final class MonitorServer: @unchecked Sendable {
  /// Clients served at once; more are told so and disconnected.
  public static let maximumClients = 32
  /// The longest request accepted, in bytes; a longer one disconnects the client.
  public static let maximumRequestSize = 1 << 20

  private let listeners: [MonitorListener]
  private let commands: QMPCommands
  private let clients = Mutex<[ObjectIdentifier: MonitorClient]>([:])
  private let firstClient = Mutex<Bool>(false)
  private let firstClientLock = NSCondition()
  private var acceptThreads: [OSThread] = []

  /// Opens every socket (failing before anything runs if one cannot be opened).
  public init(addresses: [MonitorAddress], machine: ManagedMachine, serialBackend: String = "stdio")
    throws(MonitorError)
  {
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
    commands = QMPCommands(machine: machine, monitorAddresses: addresses, serialBackend: serialBackend)
    machine.addEventListener { [weak self] event in self?.broadcast(QMPMessage.event(event)) }
  }

  /// Starts accepting clients.
  public func start() throws(MonitorError) {
    for listener in listeners {
      do {
        acceptThreads.append(try OSThread(name: "qmp-accept") { [self] in acceptLoop(listener) })
      } catch {
        throw MonitorError(description: error.description)
      }
    }
  }

  /// Blocks until a client connects, if an address asked for `wait=on`; returns at once otherwise.
  public func waitForClientIfAsked() {
    guard listeners.contains(where: { $0.address.waitForClient }) else { return }
    firstClientLock.lock()
    while !firstClient.withLock({ $0 }) { firstClientLock.wait() }
    firstClientLock.unlock()
  }

  /// Closes the sockets (removing socket files) and disconnects every client.
  public func close() {
    for listener in listeners { listener.close() }
    for thread in acceptThreads { thread.join() }
    for client in clients.withLock({ Array($0.values) }) { client.disconnect() }
  }

  private func acceptLoop(_ listener: MonitorListener) {
    while let fd = listener.accept() {
      let client = MonitorClient(fd: fd, session: QMPSession(commands: commands))
      let admitted = clients.withLock { clients in
        guard clients.count < Self.maximumClients else { return false }
        clients[ObjectIdentifier(client)] = client
        return true
      }
      guard admitted else {
        client.send(
          QMPMessage.encode([
            "error": QMPError(.genericError, "too many monitor clients (\(Self.maximumClients))").json
          ]))
        client.disconnect()
        continue
      }
      firstClientLock.lock()
      firstClient.withLock { $0 = true }
      firstClientLock.broadcast()
      firstClientLock.unlock()
      do {
        _ = try OSThread(name: "qmp-client") { [self] in
          client.serve(maximumRequestSize: Self.maximumRequestSize)
          _ = clients.withLock { $0.removeValue(forKey: ObjectIdentifier(client)) }
        }
      } catch {
        _ = clients.withLock { $0.removeValue(forKey: ObjectIdentifier(client)) }
        client.disconnect()
      }
    }
  }

  private func broadcast(_ message: Data) {
    for client in clients.withLock({ Array($0.values) }) { client.sendEvent(message) }
  }
}

/// A monitor could not be set up.
public struct MonitorError: Error, CustomStringConvertible {
  public let description: String
}
