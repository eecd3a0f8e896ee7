import DiskImage
import Glibc
import Machine

/// Everything that describes a virtual machine, as one `Codable` value.
///
/// The CLI, the monitor and (later) a management daemon all build one of these;
/// `VirtualMachine` turns it into a running machine.
public struct VirtualMachineConfiguration: Sendable, Equatable, Codable {
  /// A name for messages and the monitor.
  public var name: String
  /// Guest RAM in bytes: at least 1 MiB, a multiple of 4 KiB.
  public var memorySize: UInt64
  /// Number of vCPUs; vCPU 0 boots, the others wait for INIT/SIPI.
  public var cpuCount: Int
  /// What the boot vCPU starts running.
  public var boot: BootSource
  /// The port of the isa-debug-exit device for test guests, or nil for none.
  public var debugExitPort: UInt16?
  /// Whether to time every exit (a few tens of nanoseconds each) for `ExitStatistics`.
  public var timesExits: Bool
  /// virtio-blk disks, in order: /dev/vda, /dev/vdb, …
  public var disks: [DiskConfiguration] = []
  /// A virtio-rng device fed from the host's getrandom.
  public var entropy = false
  /// virtio-net NICs, in order (the guest's eth0, eth1, …).
  public var networks: [NetworkConfiguration] = []
  /// Which device carries the console (the host terminal or the embedder's `ConsoleOutput`).
  public var consoleDevice: ConsoleDevice = .serial
  /// A host file that receives what the guest writes to port 0x402 (QEMU's isa-debugcon,
  /// where SeaBIOS logs), or nil for no such device.
  public var debugConsolePath: String?
  /// The image in the CD-ROM drive (a virtio-scsi CD-ROM, read-only), or nil for no drive.
  public var cdrom: DiskConfiguration?
  /// How the firmware picks what to boot (`--boot`); nil leaves its own order. For firmware boot only.
  public var firmwareBoot: FirmwareBootOptions?

  /// The default amount of guest RAM.
  public static let defaultMemorySize: UInt64 = 256 << 20
  /// The least guest RAM accepted.
  public static let minimumMemorySize: UInt64 = 1 << 20

  public init(
    name: String = "skvm", memorySize: UInt64 = defaultMemorySize, cpuCount: Int = 1, boot: BootSource,
    debugExitPort: UInt16? = 0xF4, timesExits: Bool = false
  ) {
    self.name = name
    self.memorySize = memorySize
    self.cpuCount = cpuCount
    self.boot = boot
    self.debugExitPort = debugExitPort
    self.timesExits = timesExits
  }
}

extension VirtualMachineConfiguration {
  enum CodingKeys: String, CodingKey {
    case name, memorySize, cpuCount, boot, debugExitPort, timesExits, disks, entropy, networks, consoleDevice
    case debugConsolePath, firmwareBoot, cdrom
  }

  /// Decodes a configuration, one saved before a field existed included (a snapshot file from
  /// an older skvm): a missing `networks` means no NIC, as then.
  public init(from decoder: any Decoder) throws {
    let values = try decoder.container(keyedBy: CodingKeys.self)
    self.init(
      name: try values.decode(String.self, forKey: .name),
      memorySize: try values.decode(UInt64.self, forKey: .memorySize),
      cpuCount: try values.decode(Int.self, forKey: .cpuCount), boot: try values.decode(BootSource.self, forKey: .boot),
      debugExitPort: try values.decodeIfPresent(UInt16.self, forKey: .debugExitPort),
      timesExits: try values.decode(Bool.self, forKey: .timesExits))
    disks = try values.decode([DiskConfiguration].self, forKey: .disks)
    entropy = try values.decode(Bool.self, forKey: .entropy)
    networks = try values.decodeIfPresent([NetworkConfiguration].self, forKey: .networks) ?? []
    consoleDevice = try values.decode(ConsoleDevice.self, forKey: .consoleDevice)
    debugConsolePath = try values.decodeIfPresent(String.self, forKey: .debugConsolePath)
    firmwareBoot = try values.decodeIfPresent(FirmwareBootOptions.self, forKey: .firmwareBoot)
    cdrom = try values.decodeIfPresent(DiskConfiguration.self, forKey: .cdrom)
  }
}

/// The device the console is attached to.
public enum ConsoleDevice: String, Sendable, Equatable, Codable, CaseIterable {
  /// COM1, the 16550A UART (the guest's ttyS0).
  case serial
  /// A virtio-console device (the guest's hvc0); COM1's output still reaches the console.
  case virtio
}

/// What a virtual machine boots.
public enum BootSource: Sendable, Equatable, Codable {
  /// A flat binary file loaded at 0x10000.
  case flat(path: String, entry: FlatEntryMode)
  /// Flat binary bytes supplied by the embedding program, loaded at 0x10000.
  case flatImage(bytes: [UInt8], entry: FlatEntryMode)
  /// A Linux bzImage, an optional initrd and the kernel command line (64-bit boot protocol, ACPI).
  case linux(kernel: String, initrd: String?, commandLine: String)
  /// A PC BIOS image (SeaBIOS, or any `--bios` image): the boot vCPU starts at the reset
  /// vector, in real mode, as a PC does, and the firmware boots what it finds.
  case firmware(path: String)
}

extension BootSource {
  /// Whether it boots an operating system (Linux, or whatever firmware finds) rather than a
  /// flat binary: such a guest gets a NIC by default.
  public var bootsOperatingSystem: Bool {
    switch self {
    case .linux, .firmware: true
    case .flat, .flatImage: false
    }
  }

  /// Whether the guest's own reset (its reboot, Ctrl-Alt-Del) starts the machine again, through
  /// the firmware, as on a PC; a directly booted guest's reset ends the run instead.
  public var rebootsThroughFirmware: Bool {
    if case .firmware = self { return true }
    return false
  }
}

/// A virtio-blk disk.
public struct DiskConfiguration: Sendable, Equatable, Codable {
  public var path: String
  /// nil: detected from the file.
  public var format: DiskImageFormat?
  public var readOnly: Bool
  /// How the host caches the image's data.
  public var cache: CacheMode

  public init(path: String, format: DiskImageFormat? = nil, readOnly: Bool = false, cache: CacheMode = .writeback) {
    self.path = path
    self.format = format
    self.readOnly = readOnly
    self.cache = cache
  }

  /// Parses `--disk`'s syntax: `PATH[,format=raw|qcow2][,readonly=on|off][,cache=writeback|none]`.
  public init(parsing text: String) throws(OptionList.ParseError) {
    let list = try OptionList(parsing: text)
    guard !list.main.isEmpty else { throw OptionList.ParseError(description: "'\(text)': a path is needed") }
    self.init(path: list.main)
    for (key, value) in list.options {
      switch (key, value) {
      case ("format", let value) where DiskImageFormat(rawValue: value) != nil:
        format = DiskImageFormat(rawValue: value)
      case ("readonly", "on"): readOnly = true
      case ("readonly", "off"): readOnly = false
      case ("cache", let value) where CacheMode(rawValue: value) != nil:
        cache = CacheMode(rawValue: value) ?? .writeback
      default:
        throw OptionList.ParseError(
          description:
            "\(text): unknown option '\(key)=\(value)' (format=raw|qcow2, readonly=on|off, cache=writeback|none)")
      }
    }
  }

  /// Opens the image as configured (the errors name the file and say what to do).
  func open() throws(DiskImageError) -> any BlockBackend {
    do {
      return try DiskImage.open(path, format: format, writable: !readOnly, cache: cache)
    } catch {
      if case .io(let file, "open", let code) = error, !readOnly, code == EACCES || code == EPERM || code == EROFS {
        throw .invalid(
          path: file,
          reason:
            "cannot be opened for writing (\(String(cString: strerror(code)))); add readonly=on to attach it read-only")
      }
      throw error
    }
  }
}
