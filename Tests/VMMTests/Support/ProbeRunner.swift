import Foundation
import SwiftKVM

/// The result of running a guest in-process.
struct GuestRun {
  let exit: VirtualMachineExit
  let output: String
  let statistics: ExitStatistics

  /// The probe passed: it exited through the debug port with 0, printed no FAIL, and printed every `PASS` line named.
  func passed(expecting checks: [String] = []) -> Bool {
    exit == .debugExit(value: 0) && !output.contains("FAIL ") && checks.allSatisfy { output.contains("PASS \($0)") }
  }
}

/// Runs guests in this process with a captured console and a watchdog.
enum GuestRunner {
  /// Runs probe `name` (64-bit entry) with `cpus` vCPUs; `prepare` may add devices.
  static func runProbe(
    _ name: String, cpus: Int = 1, memory: UInt64 = 64 << 20, timeout: Double = 60,
    prepare: (VirtualMachine) throws -> Void = { _ in }
  ) async throws -> GuestRun {
    let image = try ProbeBuilder.binary(name)
    let configuration = VirtualMachineConfiguration(
      name: name, memorySize: memory, cpuCount: cpus, boot: .flatImage(bytes: image, entry: .long))
    return try await run(configuration, timeout: timeout, prepare: prepare)
  }

  /// Runs `configuration`; a watchdog stops the machine after `timeout` seconds.
  static func run(
    _ configuration: VirtualMachineConfiguration, timeout: Double = 60,
    prepare: (VirtualMachine) throws -> Void = { _ in }
  ) async throws -> GuestRun {
    let console = CapturedConsoleOutput()
    let machine = try VirtualMachine(configuration: configuration, console: console)
    try prepare(machine)
    // A plain dispatch timer, not a Task: the cooperative pool may be busy.
    let watchdog = DispatchWorkItem { machine.stop(reason: "test watchdog: no exit within \(timeout) s") }
    DispatchQueue.global().asyncAfter(deadline: .now() + timeout, execute: watchdog)
    let exit = try await machine.run()
    watchdog.cancel()
    return GuestRun(exit: exit, output: console.text, statistics: machine.statistics)
  }
}
