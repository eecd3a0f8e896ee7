import SwiftKVM
import Testing

/// 16-bit real-mode flat binaries, entered at CS=0x1000, IP=0 as kvmtool does.
@Suite("Real-mode guests")
struct RealModeGuestTests {
  @Test("The built-in hello guest prints on COM1 and resets through the i8042")
  func builtInHello() async throws {
    let run = try await GuestRunner.run(BuiltInGuest.helloConfiguration, timeout: 30)
    #expect(run.output == "Hello from a SwiftKVM guest: 16-bit real mode, COM1, i8042 reset.\r\n")
    guard case .reset(let source) = run.exit else {
      Issue.record("expected a reset, got \(run.exit)")
      return
    }
    #expect(source.contains("i8042"))
    #expect(run.exit.exitStatus == 0)
  }

  /// A seed-style tiny VM program: adds two numbers, prints the digit, then resets through port 0xCF9.
  /// mov $0x3f8,%dx; mov $2,%al; add $3,%al; add $'0',%al; out %al,(%dx); mov $'\n',%al; out %al,(%dx);
  /// mov $0xcf9,%dx; mov $6,%al; out %al,(%dx); hlt
  static let seedProgram: [UInt8] = [
    0xBA, 0xF8, 0x03, 0xB0, 0x02, 0x04, 0x03, 0x04, 0x30, 0xEE, 0xB0, 0x0A, 0xEE,
    0xBA, 0xF9, 0x0C, 0xB0, 0x06, 0xEE, 0xF4,
  ]

  @Test("A seed-style program runs unchanged and ends through the 0xCF9 reset")
  func seedProgramRuns() async throws {
    let configuration = VirtualMachineConfiguration(
      memorySize: 16 << 20, boot: .flatImage(bytes: Self.seedProgram, entry: .real))
    let run = try await GuestRunner.run(configuration, timeout: 30)
    #expect(run.output == "5\n")
    #expect(run.exit == .reset(source: "reset control register (port 0xCF9, 0x6)"))
  }

  @Test("A real-mode debug-exit write ends with QEMU's status convention")
  func realModeDebugExit() async throws {
    // mov $0x21,%al; out %al,$0xf4; hlt
    let configuration = VirtualMachineConfiguration(
      memorySize: 16 << 20, boot: .flatImage(bytes: [0xB0, 0x21, 0xE6, 0xF4, 0xF4], entry: .real))
    let run = try await GuestRunner.run(configuration, timeout: 30)
    #expect(run.exit == .debugExit(value: 0x21))
    #expect(run.exit.exitStatus == 0x43)
  }

  @Test("Stopping a guest that never exits ends the run promptly, on every vCPU count", arguments: [1, 3])
  func hostStopEndsSpinningGuest(cpus: Int) async throws {
    // jmp $ : spins forever in real mode, never exiting on its own.
    let configuration = VirtualMachineConfiguration(
      memorySize: 16 << 20, cpuCount: cpus, boot: .flatImage(bytes: [0xEB, 0xFE], entry: .real))
    let run = try await GuestRunner.run(configuration, timeout: 0.5)
    guard case .stoppedByHost(let reason) = run.exit else {
      Issue.record("expected a host stop, got \(run.exit)")
      return
    }
    #expect(reason.contains("watchdog"))
    #expect(run.statistics.interruptions >= 1)
  }
}
