import Foundation

/// A domain's definition: what `define` stores and `start` runs. The subset of libvirt's
/// domain XML that SwiftKVM understands, as a value (``DomainXML`` reads and writes it).
public struct DomainDefinition: Sendable, Equatable {
  /// The domain's name: unique on a host, no `/`, no control characters.
  public var name: String
  /// The domain's UUID (generated at define when the XML has none).
  public var uuid: UUID
  /// A short title (`<title>`).
  public var title: String?
  /// A free-form description (`<description>`).
  public var description: String?
  /// Guest RAM in KiB (`<memory>`).
  public var memoryKiB: UInt64
  /// The RAM the guest starts with, in KiB (`<currentMemory>`; equal to `memoryKiB` here).
  public var currentMemoryKiB: UInt64?
  /// Number of vCPUs (`<vcpu>`).
  public var vcpus: Int
  /// What to boot (`<os>`).
  public var os: OperatingSystem
  /// Host CPUs each vCPU may run on (`<cputune><vcpupin vcpu='N' cpuset='LIST'/>`), by vCPU.
  public var vcpuPins: [Int: String] = [:]
  /// What to do when the guest powers off, reboots or crashes.
  public var onPoweroff: LifecycleAction = .destroy
  /// What to do when the guest reboots.
  public var onReboot: LifecycleAction = .restart
  /// What to do when the guest crashes.
  public var onCrash: LifecycleAction = .destroy
  /// Disks and CD-ROM drives, in order (`vda`, `vdb`, …).
  public var disks: [Disk] = []
  /// Network interfaces, in order.
  public var interfaces: [Interface] = []
  /// Serial ports and consoles (the first serial port is the guest's COM1).
  public var serials: [CharacterDevice] = []
  /// Consoles (`<console>`); on this machine the console is the first serial port.
  public var consoles: [CharacterDevice] = []
  /// A virtio-rng device (`<rng model='virtio'>`).
  public var rng: RandomNumberGenerator?

  /// What to boot.
  public struct OperatingSystem: Sendable, Equatable {
    /// `hvm` (the only kind here).
    public var type = "hvm"
    /// `<type arch=…>`: `x86_64` when given.
    public var architecture: String?
    /// `<type machine=…>`, kept as written (skvm has one machine).
    public var machine: String?
    /// A Linux kernel to boot directly.
    public var kernel: String?
    /// Its initrd.
    public var initrd: String?
    /// Its command line.
    public var cmdline: String?
    /// Firmware boot order (`<boot dev=…>`).
    public var bootDevices: [BootDevice] = []
    /// A firmware image (`<loader>`).
    public var loader: String?
    /// A flat binary to boot (SwiftKVM's extension, `<skvm:flat entry='long'>PATH</skvm:flat>`).
    public var flat: FlatBinary?

    public init() {}
  }

  /// A firmware boot device.
  public enum BootDevice: String, Sendable, Equatable, CaseIterable {
    case hd, cdrom, network, fd
  }

  /// A flat binary and how to enter it (`skvm run --flat PATH --flat-entry MODE`).
  public struct FlatBinary: Sendable, Equatable {
    public var path: String
    /// `real` or `long`.
    public var entry: String
    public init(path: String, entry: String) {
      self.path = path
      self.entry = entry
    }
  }

  /// libvirt's `on_poweroff`/`on_reboot`/`on_crash` values this host carries out.
  public enum LifecycleAction: String, Sendable, Equatable, CaseIterable {
    case destroy, restart, preserve
    case renameRestart = "rename-restart"
    case coredumpDestroy = "coredump-destroy"
    case coredumpRestart = "coredump-restart"
  }

  /// A disk or CD-ROM drive.
  public struct Disk: Sendable, Equatable {
    /// `disk` or `cdrom`.
    public var device: Kind
    /// The image file.
    public var source: String?
    /// `raw` or `qcow2`.
    public var format: String?
    /// `none`, `writeback` (others are refused).
    public var cache: String?
    /// Read-only (`<readonly/>`; always for a CD-ROM).
    public var readOnly: Bool
    /// The guest device name, e.g. `vda`.
    public var target: String
    /// The target bus (`virtio`; `scsi` or `sata` for a CD-ROM).
    public var bus: String?

    /// What kind of drive.
    public enum Kind: String, Sendable, Equatable { case disk, cdrom }

    public init(
      device: Kind, source: String?, format: String? = nil, cache: String? = nil, readOnly: Bool = false,
      target: String, bus: String? = nil
    ) {
      self.device = device
      self.source = source
      self.format = format
      self.cache = cache
      self.readOnly = readOnly
      self.target = target
      self.bus = bus
    }
  }

  /// A network interface.
  public struct Interface: Sendable, Equatable {
    /// How it reaches the host.
    public var kind: Kind
    /// Its MAC address (generated at define when absent).
    public var mac: String?
    /// `virtio` (the only model here).
    public var model: String?

    /// libvirt's interface types that SwiftKVM has.
    public enum Kind: Sendable, Equatable {
      /// `type='ethernet'`: a tap device, named by `<target dev=…>` (or created unnamed).
      case ethernet(tap: String?)
      /// `type='bridge'`: a tap added to this bridge.
      case bridge(String, tap: String?)
      /// `type='user'`: user-mode networking (NAT).
      case user
    }

    public init(kind: Kind, mac: String? = nil, model: String? = nil) {
      self.kind = kind
      self.mac = mac
      self.model = model
    }
  }

  /// A serial port or console: `type='pty'` or `'file'` (the daemon keeps the output in a log).
  public struct CharacterDevice: Sendable, Equatable {
    /// `pty`, `file` or `null`.
    public var type: String
    /// `<target port=…>`.
    public var port: Int?
    /// `<target type=…>` of a console (`serial`).
    public var targetType: String?
    /// `<source path=…>` of a file.
    public var path: String?

    public init(type: String, port: Int? = nil, targetType: String? = nil, path: String? = nil) {
      self.type = type
      self.port = port
      self.targetType = targetType
      self.path = path
    }
  }

  /// A virtio-rng device and its back end.
  public struct RandomNumberGenerator: Sendable, Equatable {
    /// `virtio`.
    public var model: String
    /// `random` (a host device path) or `builtin`.
    public var backend: String
    /// The host device for a `random` back end (skvm reads getrandom whatever it names).
    public var device: String?

    public init(model: String = "virtio", backend: String = "builtin", device: String? = nil) {
      self.model = model
      self.backend = backend
      self.device = device
    }
  }

  public init(
    name: String, uuid: UUID = UUID(), memoryKiB: UInt64 = 256 << 10, vcpus: Int = 1, os: OperatingSystem = .init()
  ) {
    self.name = name
    self.uuid = uuid
    self.memoryKiB = memoryKiB
    self.vcpus = vcpus
    self.os = os
  }
}
