import ArgumentParser
import Glibc
import GuestKit
import Monitor
import SwiftKVM

/// `skvm run`: boot a guest and run it until it resets, powers off or faults.
struct Run: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "run",
    abstract: "Run a virtual machine.",
    discussion: """
      Without a boot source, boots the default guest: Debian's cloud kernel and a busybox
      initramfs (built on first use, see 'skvm kit'), to a shell on the serial console.
      Standard input goes to the guest's console; on a terminal, in raw mode: Ctrl-A x quits.

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

  @Option(help: ArgumentHelp("Boot this Linux kernel (bzImage).", valueName: "file"))
  var kernel: String?

  @Option(help: ArgumentHelp("The initrd for --kernel.", valueName: "file"))
  var initrd: String?

  @Option(help: ArgumentHelp("The kernel command line.", valueName: "text"))
  var cmdline: String?

  @Option(
    help: """
      The guest console on this terminal: serial (COM1, ttyS0), virtio (a virtio-console device, hvc0; \
      COM1's output is shown too), or none.
      """)
  var console: ConsoleChoice?

  @Option(name: .customLong("flat"), help: ArgumentHelp("Boot this flat binary.", valueName: "file"))
  var flatPath: String?

  @Option(
    help: ArgumentHelp(
      "Boot through this PC BIOS image (e.g. /usr/share/seabios/bios-256k.bin): the first vCPU starts at "
        + "the reset vector in real mode, as a PC does, and the firmware boots what it finds.",
      valueName: "file"))
  var bios: String?

  @Option(
    help: ArgumentHelp(
      "Put this image (an ISO) in a CD-ROM drive (virtio-scsi, read-only). Without --kernel the machine boots "
        + "through the firmware, which tries the disks and then the CD (--boot order=d: the CD first).",
      valueName: "file"))
  var cdrom: String?

  @Option(
    help: ArgumentHelp(
      "Boot through the firmware (SeaBIOS, or --bios) and tell it what to try first, as QEMU's -boot: "
        + "order=c|d|n…[,menu=on][,reboot-timeout=MS] (c: first disk; a bare 'c' is an order).",
      valueName: "options"))
  var boot: String?

  @Option(
    help: ArgumentHelp(
      "Write what the guest writes to port 0x402 (QEMU's isa-debugcon: SeaBIOS's log) to this file.",
      valueName: "file"))
  var debugcon: String?

  @Flag(help: "Run the built-in hello guest (16-bit real mode, prints a greeting and resets).")
  var hello = false

  @Option(name: .customLong("flat-entry"), help: "How to enter the flat binary: real or long.")
  var flatEntry: FlatEntryMode = .real

  @Option(help: ArgumentHelp("Guest RAM, e.g. 256M or 2G (a bare number means MiB).", valueName: "size"))
  var memory: String?

  @Option(help: ArgumentHelp("Number of vCPUs.", valueName: "n"))
  var cpus: Int?

  @Option(
    name: .customLong("qmp"),
    help: ArgumentHelp(
      "Serve a QMP monitor here (repeatable): unix:PATH[,server=on][,wait=on|off] or tcp:[HOST]:PORT. "
        + "TCP listens on loopback (127.0.0.1) unless HOST says otherwise; wait=on holds the guest "
        + "until a client connects (default: off).",
      valueName: "address"))
  var qmp: [String] = []

  @Option(
    help: ArgumentHelp(
      "Attach a virtio-blk disk (repeatable: /dev/vda, /dev/vdb, …): "
        + "PATH[,format=raw|qcow2][,readonly=on][,cache=writeback|none]. cache=none bypasses the host's page cache (O_DIRECT).",
      valueName: "disk"))
  var disk: [String] = []

  @Option(
    help: ArgumentHelp(
      "Attach a virtio-net NIC (repeatable: eth0, eth1, …): tap,ifname=NAME[,bridge=BR] | macvtap,path=/dev/tapN | "
        + "user[,hostfwd=tcp:[HOSTADDR]:PORT-:GUESTPORT]... | none; each takes [,mac=MAC]. "
        + "Linux guests get 'user' (NAT, DHCP, DNS, no root needed) unless told otherwise.",
      valueName: "network"))
  var net: [String] = []

  @Flag(help: "Attach a virtio-rng device fed from the host's getrandom (/dev/hwrng in the guest).")
  var rng = false

  @Option(
    help: ArgumentHelp(
      "Restore a machine saved with QMP migrate to file:PATH, and run it on: file:PATH[,mode=mapped|copy]. "
        + "mapped (the default) maps the file's RAM copy-on-write (the file must stay); copy reads it in. "
        + "Options left out come from the snapshot; those given must match it. "
        + "tcp:[HOST]:PORT waits for a live migration (QMP migrate to tcp:HOST:PORT on the source; loopback "
        + "unless HOST is given) and runs the machine it receives; defer waits for QMP migrate-incoming "
        + "to say where (needs --qmp).",
      valueName: "uri"))
  var incoming: String?

  @Option(
    help: ArgumentHelp(
      "Start from internal snapshot NAME of the qcow2 disks (made with savevm): the disks are reverted to it "
        + "and the machine continues where it was saved.",
      valueName: "name"))
  var loadvm: String?

  @Option(
    help: ArgumentHelp(
      "Also offer the serial console on this unix socket (mode 0600): one client at a time gets the output "
        + "as it comes and types the input (skvmd's 'skvm ctl console' attaches here); the output still goes "
        + "to standard output.",
      valueName: "path"))
  var consoleSocket: String?

  @Option(help: ArgumentHelp("The machine's name (QMP query-name).", valueName: "name"))
  var name: String = "skvm"

  @Flag(
    help: ArgumentHelp(
      "Start with the vCPUs paused, as QEMU's -S: the monitor's cont runs them (a manager connects first, "
        + "so that it hears every event)."))
  var paused = false

  @Flag(help: "Print exit counts and time per exit reason when the guest stops.")
  var stats = false

  @Option(
    name: .customLong("debug-exit-port"),
    help: ArgumentHelp("Port of the isa-debug-exit device; 'none' to leave it out.", valueName: "port"))
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
          mode: incomingSnapshot.mode, core: migration?.takeEarlyCore())
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
    if !monitorStarted { try startMonitor(monitor) }
    let received = ReceivedSignal()
    HostSignals.forward(to: managed, received: received)
    socketConsole?.start { managed.receiveConsoleInput($0) }
    TerminalMode.enterRaw()
    let input = ConsoleInputPump(
      fd: STDIN_FILENO, deliver: { managed.receiveConsoleInput($0) },
      onEscape: { managed.stop(cause: .hostUI, reason: "Ctrl-A x typed on the console") })
    let exit: VirtualMachineExit
    do {
      // The input thread starts once the vCPUs run: starting it first delayed the guest.
      exit = try managed.run { input.start() }
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

/// Where `skvm run` sends the guest console.
enum ConsoleChoice: String, ExpressibleByArgument, CaseIterable {
  case serial
  case virtio
  case none
}

extension FlatEntryMode: ExpressibleByArgument {}

/// Writes a line to standard error.
func printError(_ line: String) {
  var text = line
  if !text.hasSuffix("\n") { text += "\n" }
  text.withUTF8 { bytes in _ = write(STDERR_FILENO, bytes.baseAddress, bytes.count) }
}

/// `--incoming`'s value: `file:PATH[,mode=mapped|copy]`, `tcp:[HOST]:PORT` or `defer`.
struct IncomingSource {
  enum Kind {
    case file(String)
    case tcp(MigrationAddress)
    /// `defer`: listen once QMP `migrate-incoming` says where.
    case deferred
  }
  var kind: Kind
  var mode: RestoreMode

  init(parsing text: String) throws {
    if text == "defer" {
      kind = .deferred
      mode = .mapped
      return
    }
    if text.hasPrefix("tcp:") {
      do { kind = .tcp(try MigrationAddress(parsing: text, listening: true)) } catch {
        throw ValidationError(error.description)
      }
      mode = .mapped
      return
    }
    let list = try OptionList(parsing: text)
    guard list.main.hasPrefix("file:"), list.main.count > 5 else {
      throw ValidationError(
        "'\(text)': skvm restores from file:PATH, or receives a migration on tcp:[HOST]:PORT (or defer: where QMP migrate-incoming says)"
      )
    }
    kind = .file(String(list.main.dropFirst(5)))
    mode = .mapped
    for (key, value) in list.options {
      guard key == "mode", let chosen = RestoreMode(rawValue: value) else {
        throw ValidationError("'\(text)': unknown option '\(key)=\(value)' (mode=mapped|copy)")
      }
      mode = chosen
    }
  }
}
