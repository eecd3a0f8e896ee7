import ArgumentParser
import Glibc
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

  /// The options as a plain value: what the rest of `skvm run` works from, however parsed.
  var options: RunOptions {
    RunOptions(
      kernel: kernel, initrd: initrd, cmdline: cmdline, console: console, flatPath: flatPath, bios: bios,
      cdrom: cdrom, boot: boot, debugcon: debugcon, hello: hello, flatEntry: flatEntry, memory: memory, cpus: cpus,
      qmp: qmp, disk: disk, net: net, rng: rng, incoming: incoming, loadvm: loadvm, consoleSocket: consoleSocket,
      name: name, paused: paused, stats: stats, debugExitPort: debugExitPort)
  }

  func validate() throws { try options.validate() }

  func run() throws { try options.run() }
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
