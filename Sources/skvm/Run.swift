import ArgumentParser
import Glibc
import SwiftKVM

/// `skvm run`: boot a guest and run it until it resets, powers off or faults.
struct Run: ParsableCommand {
  static let configuration = CommandConfiguration(
    abstract: "Run a virtual machine.",
    discussion: """
      Without a boot source, runs the built-in hello guest.

      Flat binaries are loaded at guest-physical 0x10000. With --flat-entry real (the default)
      they start in 16-bit real mode at CS=0x1000, IP=0, SP=0x8000 (kvmtool's convention).
      With --flat-entry long they start in 64-bit mode at 0x10000 with the low 4 GiB
      identity-mapped, RDI = number of vCPUs, RSI = bytes of RAM below 3 GiB. vCPUs other
      than the first wait for INIT/SIPI, as on real hardware.

      Exit status: 0 when the guest resets (i8042 0xFE, port 0xCF9) or powers off;
      (value << 1) | 1 when it writes value to the debug-exit port (0xF4); 1 when the VM
      cannot be started; 2 when the guest crashes (triple fault, emulation failure);
      3 when the VMM fails; 128 + N when stopped by signal N.
      """
  )

  @Option(name: .customLong("flat"), help: ArgumentHelp("Boot this flat binary.", valueName: "file"))
  var flatPath: String?

  @Option(name: .customLong("flat-entry"), help: "How to enter the flat binary: real or long.")
  var flatEntry: FlatEntryMode = .real

  @Option(help: ArgumentHelp("Guest RAM, e.g. 256M or 2G (a bare number means MiB).", valueName: "size"))
  var memory: String = "256M"

  @Option(help: ArgumentHelp("Number of vCPUs.", valueName: "n"))
  var cpus: Int = 1

  @Flag(help: "Print exit counts and time per exit reason when the guest stops.")
  var stats = false

  @Option(
    name: .customLong("debug-exit-port"),
    help: ArgumentHelp("Port of the isa-debug-exit device; 'none' to leave it out.", valueName: "port"))
  var debugExitPort: String = "0xf4"

  func validate() throws {
    do {
      _ = try ByteSize.parse(memory)
    } catch {
      throw ValidationError("--memory: \(error)")
    }
    if cpus < 1 { throw ValidationError("--cpus must be at least 1 (got \(cpus))") }
    if parsedDebugExitPort == .invalid {
      throw ValidationError("--debug-exit-port: '\(debugExitPort)' is not a port number (0–65535) or 'none'")
    }
  }

  private enum PortSetting: Equatable {
    case none
    case port(UInt16)
    case invalid
  }

  private var parsedDebugExitPort: PortSetting {
    if debugExitPort == "none" { return .none }
    let digits = debugExitPort.lowercased()
    let value = digits.hasPrefix("0x") ? UInt16(digits.dropFirst(2), radix: 16) : UInt16(digits)
    return value.map { .port($0) } ?? .invalid
  }

  func makeConfiguration() throws -> VirtualMachineConfiguration {
    var configuration = BuiltInGuest.helloConfiguration
    if let flatPath { configuration.boot = .flat(path: flatPath, entry: flatEntry) }
    configuration.name = "skvm"
    configuration.memorySize = try ByteSize.parse(memory)
    configuration.cpuCount = cpus
    configuration.timesExits = stats
    if case .port(let port) = parsedDebugExitPort {
      configuration.debugExitPort = port
    } else {
      configuration.debugExitPort = nil
    }
    return configuration
  }

  func run() throws {
    let configuration = try makeConfiguration()
    HostSignals.block()
    let machine: VirtualMachine
    do {
      machine = try VirtualMachine(configuration: configuration)
    } catch {
      printError("skvm: \(error)")
      throw ExitCode(1)
    }
    let received = ReceivedSignal()
    HostSignals.forward(to: machine, received: received)
    let exit: VirtualMachineExit
    do {
      exit = try machine.run()
    } catch {
      printError("skvm: \(error)")
      throw ExitCode(3)
    }
    if let message = exit.message { printError("skvm: \(message)") }
    if case .stoppedByHost = exit {
      for line in machine.vcpuPositions { printError("skvm:   \(line)") }
    }
    if stats { printError(machine.statistics.report(timed: true, cpuCount: configuration.cpuCount)) }
    if let number = received.number { throw ExitCode(128 + number) }
    throw ExitCode(exit.exitStatus)
  }
}

extension FlatEntryMode: ExpressibleByArgument {}

/// Writes a line to standard error.
func printError(_ line: String) {
  var text = line
  if !text.hasSuffix("\n") { text += "\n" }
  text.withUTF8 { bytes in _ = write(STDERR_FILENO, bytes.baseAddress, bytes.count) }
}
