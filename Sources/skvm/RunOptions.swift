import ArgumentParser
import Glibc
import GuestKit
import Monitor
import SwiftKVM

/// What `skvm run` was asked to do: its options as a plain value (from `Run`, parsed by
/// ArgumentParser, or from `RunOptions(quickParsing:)`), and the command itself.
struct RunOptions: Equatable {
  var kernel: String?
  var initrd: String?
  var cmdline: String?
  var console: ConsoleChoice?
  var flatPath: String?
  var bios: String?
  var cdrom: String?
  var boot: String?
  var debugcon: String?
  var hello = false
  var flatEntry: FlatEntryMode = .real
  var memory: String?
  var cpus: Int?
  var qmp: [String] = []
  var disk: [String] = []
  var net: [String] = []
  var rng = false
  var incoming: String?
  var loadvm: String?
  var consoleSocket: String?
  var name: String = "skvm"
  var paused = false
  var stats = false
  var debugExitPort: String = "0xf4"

  func validate() throws {
    if let memory {
      do {
        _ = try ByteSize.parse(memory)
      } catch {
        throw ValidationError("--memory: \(error)")
      }
    }
    if let cpus, cpus < 1 { throw ValidationError("--cpus must be at least 1 (got \(cpus))") }
    if paused && qmp.isEmpty {
      throw ValidationError("--paused waits for the monitor's cont: give a monitor with --qmp")
    }
    if incoming != nil && loadvm != nil {
      throw ValidationError("--incoming and --loadvm each restore a machine: give one")
    }
    if let incoming {
      do { _ = try IncomingSource(parsing: incoming) } catch { throw ValidationError("--incoming: \(error)") }
      if kernel != nil || flatPath != nil || hello || bios != nil {
        throw ValidationError("--incoming restores a saved machine: leave out --kernel, --flat, --hello and --bios")
      }
      if incoming == "defer" && qmp.isEmpty {
        throw ValidationError(
          "--incoming defer waits for QMP migrate-incoming: give a monitor with --qmp (e.g. --qmp unix:/tmp/dest.qmp)")
      }
    }
    let firmware = bios != nil || boot != nil || (cdrom != nil && kernel == nil && flatPath == nil && !hello)
    if [kernel != nil, flatPath != nil, hello, firmware].filter({ $0 }).count > 1 {
      throw ValidationError(
        "--kernel, --flat, --hello and firmware boot (--bios, --boot) each say what to boot: give one of them")
    }
    if firmware && (initrd != nil || cmdline != nil) {
      throw ValidationError(
        "--initrd and --cmdline go with --kernel; with --bios or --boot the firmware boots from the disks")
    }
    if let boot {
      do { _ = try Self.parseBoot(boot) } catch { throw ValidationError("\(error)") }
    }
    if incoming != nil && (boot != nil || cdrom != nil) {
      throw ValidationError("--incoming restores a saved machine (with its CD-ROM): leave out --boot and --cdrom")
    }
    if boot.map({ (try? Self.parseBoot($0))?.order.contains(.cdrom) == true }) == true, cdrom == nil {
      throw ValidationError("--boot order=d boots from the CD-ROM drive: give it an image with --cdrom FILE.iso")
    }
    if (initrd != nil || cmdline != nil) && kernel == nil && (flatPath != nil || hello) {
      throw ValidationError("--initrd and --cmdline go with --kernel (or the default guest)")
    }
    for value in qmp {
      do { _ = try MonitorAddress(parsing: value) } catch { throw ValidationError("--qmp: \(error)") }
    }
    if net.contains("none") && net.count > 1 {
      throw ValidationError("--net none means no NIC at all: leave out the other --net options, or 'none'")
    }
    for value in net where value != "none" {
      do { _ = try NetworkConfiguration(parsing: value) } catch { throw ValidationError("\(error)") }
    }
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
    if let flatPath {
      configuration.boot = .flat(path: flatPath, entry: flatEntry)
    } else if bios != nil || boot != nil || cdrom != nil && kernel == nil {
      configuration.boot = .firmware(path: bios ?? FirmwareROM.defaultImagePath)
      configuration.firmwareBoot = try boot.map(Self.parseBoot)
    } else if let kernel {
      configuration.boot = .linux(
        kernel: kernel, initrd: initrd, commandLine: cmdline ?? "console=\(consoleChoice == .virtio ? "hvc0" : "ttyS0")"
      )
    } else if !hello {
      let kit: GuestKit
      do {
        kit = try GuestKit.prepare { printError($0) }
      } catch {
        printError("skvm: \(error)")
        throw ExitCode(1)
      }
      configuration.boot = .linux(
        kernel: kit.kernelPath, initrd: initrd ?? kit.initrdPath,
        commandLine: cmdline ?? GuestKit.defaultCommandLine(console: consoleChoice == .virtio ? "hvc0" : "ttyS0"))
    }
    configuration.name = name
    configuration.disks = try disk.map(Self.parseDisk)
    if let cdrom {
      Self.warnUnlessISO9660(cdrom)
      configuration.cdrom = DiskConfiguration(path: cdrom, format: nil, readOnly: true)
    }
    configuration.entropy = rng
    // A Linux guest (or what firmware boots) is online by default (user networking), as under
    // QEMU; a flat binary has no driver for a NIC.
    if configuration.boot.bootsOperatingSystem, net.isEmpty {
      configuration.networks = [.user]
    } else {
      configuration.networks = try parsedNetworks()
    }
    configuration.consoleDevice = consoleChoice == .virtio ? .virtio : .serial
    configuration.memorySize = try ByteSize.parse(memory ?? "256M")
    configuration.cpuCount = cpus ?? 1
    configuration.timesExits = stats
    configuration.debugConsolePath = debugcon
    if case .port(let port) = parsedDebugExitPort {
      configuration.debugExitPort = port
    } else {
      configuration.debugExitPort = nil
    }
    return configuration
  }

  /// The console as asked for (serial unless said otherwise).
  private var consoleChoice: ConsoleChoice { console ?? .serial }

  /// The configuration of a machine restored from `snapshot`: the saved one, with what this
  /// command line gives explicitly (which must then match it, or the restore says what differs).
  func restoredConfiguration(_ snapshot: SnapshotFile) throws -> VirtualMachineConfiguration {
    var configuration: VirtualMachineConfiguration
    do { configuration = try snapshot.savedConfiguration() } catch {
      printError("skvm: \(error)")
      throw ExitCode(1)
    }
    configuration.name = name
    configuration.timesExits = stats
    configuration.debugConsolePath = debugcon
    if let memory { configuration.memorySize = try ByteSize.parse(memory) }
    if let cpus { configuration.cpuCount = cpus }
    if !disk.isEmpty { configuration.disks = try disk.map(Self.parseDisk) }
    if let console { configuration.consoleDevice = console == .virtio ? .virtio : .serial }
    if rng { configuration.entropy = true }
    if !net.isEmpty { configuration.networks = try parsedNetworks() }
    return configuration
  }

  func run() throws {
    StartupTrace.shared.mark("arguments")
    var incomingSnapshot: (snapshot: SnapshotFile, mode: RestoreMode)?
    var migration: IncomingMigration?
    var deferred: DeferredIncoming?
    // A destination told to wait (--incoming defer) serves its monitor before the machine exists.
    var monitor: MonitorServer?
    if let incoming {
      let source = try IncomingSource(parsing: incoming)
      do {
        switch source.kind {
        case .file(let path): incomingSnapshot = (try SnapshotFile(path: path), source.mode)
        case .tcp(let address):
          let listener = try IncomingMigration(address: address)
          printError("skvm: waiting for a migration on \(listener.address)")
          incomingSnapshot = (try listener.receive(), .mapped)
          migration = listener
        case .deferred:
          let waiting = DeferredIncoming()
          deferred = waiting
          monitor = try openMonitor()
          monitor?.awaitIncoming(waiting)
          try startMonitor(monitor)
          printError("skvm: waiting for QMP migrate-incoming on \(qmp.joined(separator: ", "))")
          guard let listener = waiting.waitForListener() else {
            monitor?.close()
            throw ExitCode(0)
          }
          printError("skvm: waiting for a migration on \(listener.address)")
          do {
            incomingSnapshot = (try listener.receive(), .mapped)
          } catch {
            waiting.finish(succeeded: false)
            if waiting.hasQuit {
              monitor?.close()
              throw ExitCode(0)
            }
            throw error
          }
          migration = listener
        }
      } catch let exit as ExitCode {
        throw exit
      } catch {
        monitor?.close()
        printError("skvm: \(error)")
        throw ExitCode(1)
      }
      StartupTrace.shared.mark("snapshot read")
    }
    let configuration = try incomingSnapshot.map { try restoredConfiguration($0.snapshot) } ?? makeConfiguration()
    HostSignals.block()
    StartupTrace.shared.mark("configuration")
    // The monitor's sockets open before the machine is built: a bad --qmp fails before /dev/kvm.
    let monitorStarted = monitor != nil
    if monitor == nil { monitor = try openMonitor() }
    defer { monitor?.close() }
    let managed: ManagedMachine
    var output: any ConsoleOutput =
      console == ConsoleChoice.none ? DiscardedConsoleOutput() : FileDescriptorConsoleOutput()
    var socketConsole: ConsoleSocket?
    if let consoleSocket {
      do {
        socketConsole = try ConsoleSocket(path: consoleSocket, output: output)
      } catch {
        printError("skvm: \(error)")
        throw ExitCode(1)
      }
      output = socketConsole ?? output
    }
    defer { socketConsole?.close() }
    do {
      if let incomingSnapshot {
        managed = try ManagedMachine(
          restoring: incomingSnapshot.snapshot, configuration: configuration, console: output,
          mode: incomingSnapshot.mode, prepared: migration?.takePreparedParts())
      } else if let loadvm {
        managed = try ManagedMachine(configuration: configuration, loadingSnapshot: loadvm, console: output)
      } else {
        managed = try ManagedMachine(configuration: configuration, console: output)
      }
    } catch {
      migration?.refuse("\(error)")
      deferred?.finish(succeeded: false)
      printError("skvm: \(error)")
      throw ExitCode(1)
    }
    // A guest paused on the source (by its user) stays paused here until `cont`, as in QEMU.
    if let migration, !migration.sourceWasRunning { managed.pause() }
    // The source stops for good once it hears this; the machine runs here from now on.
    if let migration {
      migration.acknowledge()
      StartupTrace.shared.mark("acknowledged")
    }
    for notice in managed.machine.setupNotices { printError("skvm: \(notice)") }
    if case .linux = configuration.boot, HostKVMKind.detect() == .pvm,
      getenv("SKVM_ALLOW_PVM_LINUX") == nil
    {
      printError(
        """
        skvm: this host's KVM (kvm_pvm) cannot run a stock Linux user space: guest kernel code is emulated \
        and the guest's first system call faults inside KVM, beyond any VMM's reach. Run it in the \
        real-KVM lane instead (scripts/lane -- skvm run ...; see README), or set SKVM_ALLOW_PVM_LINUX=1 \
        to try anyway.
        """)
      deferred?.finish(succeeded: false)
      throw ExitCode(1)
    }
    if paused { managed.pause() }
    monitor?.attach(to: managed, serialBackend: console == ConsoleChoice.none ? "null" : "stdio")
    // MIGRATION completed once the monitor drives the machine: a manager that hears it and
    // asks query-status or cont at once talks to the machine, not to the waiting destination.
    deferred?.finish(succeeded: true)
    // A monitor that waits for its client starts (and waits) before the guest runs; any other
    // starts, as the signal forwarder does, once the vCPUs run: each is a thread, and starting
    // them first delayed the guest's first instruction (after a boot, or a migration's
    // switch-over, which the guest sees as a pause). Connections wait in the listen queue.
    let monitorStartsLate = !monitorStarted && monitor?.waitsForClient == false
    if !monitorStarted && !monitorStartsLate { try startMonitor(monitor) }
    let received = ReceivedSignal()
    socketConsole?.start { managed.receiveConsoleInput($0) }
    TerminalMode.enterRaw()
    let input = ConsoleInputPump(
      fd: STDIN_FILENO, deliver: { managed.receiveConsoleInput($0) },
      onEscape: { managed.stop(cause: .hostUI, reason: "Ctrl-A x typed on the console") })
    let exit: VirtualMachineExit
    do {
      // The input thread starts once the vCPUs run: starting it first delayed the guest.
      exit = try managed.run {
        input.start()
        HostSignals.forward(to: managed, received: received)
        guard monitorStartsLate, let monitor else { return }
        do { try monitor.start() } catch {
          printError("skvm: \(error)")
          managed.stop(cause: .hostError, reason: "the monitor could not start")
        }
      }
    } catch {
      TerminalMode.restore()
      printError("skvm: \(error)")
      throw ExitCode(3)
    }
    TerminalMode.restore()
    let machine = managed.machine
    if let message = exit.message { printError("skvm: \(message)") }
    if case .stoppedByHost = exit, received.number != nil {
      for line in machine.vcpuPositions { printError("skvm:   \(line)") }
    }
    if stats {
      printError(StartupTrace.shared.report)
      printError(machine.statistics.report(timed: true, cpuCount: configuration.cpuCount))
      let devices = machine.deviceStatistics
      if !devices.isEmpty { printError((["devices:"] + devices).joined(separator: "\n")) }
    }
    if let number = received.number { throw ExitCode(128 + number) }
    if case .stoppedByHost = exit, managed.stopCause == .hostError { throw ExitCode(1) }
    // quit from a monitor is an orderly end, as in QEMU.
    if case .stoppedByHost = exit, managed.stopCause == .hostQMPQuit { throw ExitCode(0) }
    throw ExitCode(exit.exitStatus)
  }

  /// The `--net` options as NICs (`none`: no NIC).
  private func parsedNetworks() throws -> [NetworkConfiguration] {
    try net.filter { $0 != "none" }.map { text in
      do { return try NetworkConfiguration(parsing: text) } catch { throw ValidationError("\(error)") }
    }
  }

  /// `PATH[,format=raw|qcow2][,readonly=on|off][,cache=writeback|none]`.
  /// `--boot`'s value; a network first is refused here (skvm's NICs have no boot ROM).
  static func parseBoot(_ text: String) throws -> FirmwareBootOptions {
    let options: FirmwareBootOptions
    do { options = try FirmwareBootOptions(parsing: text) } catch { throw ValidationError("\(error)") }
    if options.order.contains(.network) {
      throw ValidationError("--boot order=n: skvm's NICs have no network boot ROM; boot from a disk (c)")
    }
    return options
  }

  /// Warns (and goes on: the firmware decides) when `path` has no ISO 9660 volume descriptor
  /// ("CD001" at byte 32769).
  static func warnUnlessISO9660(_ path: String) {
    let descriptor = open(path, O_RDONLY | O_CLOEXEC)
    guard descriptor >= 0 else { return }  // opening it later says why it cannot be used
    defer { close(descriptor) }
    var magic = [UInt8](repeating: 0, count: 5)
    let count = pread(descriptor, &magic, 5, 0x8001)
    if count != 5 || magic != Array("CD001".utf8) {
      printError(
        "skvm: warning: --cdrom \(path) has no ISO 9660 signature (CD001 at byte 32769); attached anyway, the firmware decides"
      )
    }
  }

  static func parseDisk(_ text: String) throws -> DiskConfiguration {
    do { return try DiskConfiguration(parsing: text) } catch { throw ValidationError("--disk: \(error)") }
  }

  /// Opens the --qmp sockets (a clear error and status 1 if one cannot be).
  private func openMonitor() throws -> MonitorServer? {
    guard !qmp.isEmpty else { return nil }
    do {
      let addresses = try qmp.map { value throws(MonitorAddress.ParseError) in try MonitorAddress(parsing: value) }
      return try MonitorServer(addresses: addresses)
    } catch {
      printError("skvm: \(error)")
      throw ExitCode(1)
    }
  }

  /// Serves the monitor's sockets (a machine, or a waiting destination, attached), and waits
  /// for a client if one asked for wait=on.
  private func startMonitor(_ server: MonitorServer?) throws {
    guard let server else { return }
    do {
      try server.start()
    } catch {
      printError("skvm: \(error)")
      throw ExitCode(1)
    }
    if server.waitsForClient {
      printError("skvm: waiting for a monitor client on \(qmp.joined(separator: ", "))")
      server.waitForClientIfAsked()
    }
  }
}
