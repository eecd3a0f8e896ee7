import Glibc
import SwiftKVM

/// Turns SIGINT, SIGTERM and SIGHUP into an orderly stop of a virtual machine.
///
/// The signals are blocked in every thread (vCPU threads inherit the mask) and
/// taken synchronously by one waiting thread, which asks the machine to stop.
enum HostSignals {
  static let handled: [Int32] = [SIGINT, SIGTERM, SIGHUP]

  /// Blocks the signals in the calling thread; call before any other thread starts.
  static func block() {
    var set = signalSet()
    pthread_sigmask(SIG_BLOCK, &set, nil)
  }

  /// Starts the thread that waits for a signal and stops `machine`; records the signal in `received`.
  static func forward(to machine: ManagedMachine, received: ReceivedSignal) {
    var thread = pthread_t()
    let context = Unmanaged.passRetained(Forwarding(machine: machine, received: received)).toOpaque()
    pthread_create(
      &thread, nil,
      { argument in
        guard let argument else { return nil }
        let forwarding = Unmanaged<Forwarding>.fromOpaque(argument).takeRetainedValue()
        var set = HostSignals.signalSet()
        var number: Int32 = 0
        if sigwait(&set, &number) == 0 {
          forwarding.received.number = number
          forwarding.machine.stop(cause: .hostSignal, reason: "received \(HostSignals.name(number))")
        }
        return nil
      }, context)
    pthread_detach(thread)
  }

  static func name(_ number: Int32) -> String {
    switch number {
    case SIGINT: "SIGINT"
    case SIGTERM: "SIGTERM"
    case SIGHUP: "SIGHUP"
    default: "signal \(number)"
    }
  }

  fileprivate static func signalSet() -> sigset_t {
    var set = sigset_t()
    sigemptyset(&set)
    for number in handled { sigaddset(&set, number) }
    return set
  }

  private final class Forwarding {
    let machine: ManagedMachine
    let received: ReceivedSignal
    init(machine: ManagedMachine, received: ReceivedSignal) {
      self.machine = machine
      self.received = received
    }
  }
}

/// The signal that stopped the machine, if any (written once by the waiting thread, read after `run()`).
final class ReceivedSignal: @unchecked Sendable {
  var number: Int32?
}
