/// A line of `list`: what the API returns for each domain.
public struct DomainSummary: Sendable, Codable, Equatable {
  /// The running domain's id (nil when shut off: virsh prints `-`).
  public var id: Int?
  public var name: String
  public var uuid: String
  public var state: DomainState
  public var reason: DomainStateReason
  public var persistent: Bool
  public var autostart: Bool
  public var template: Bool
  public var title: String?

  public init(
    id: Int?, name: String, uuid: String, state: DomainState, reason: DomainStateReason, persistent: Bool,
    autostart: Bool, template: Bool, title: String?
  ) {
    self.id = id
    self.name = name
    self.uuid = uuid
    self.state = state
    self.reason = reason
    self.persistent = persistent
    self.autostart = autostart
    self.template = template
    self.title = title
  }
}

/// `dominfo`: a summary plus the definition's sizes and the process running it.
public struct DomainInfo: Sendable, Codable, Equatable {
  public var summary: DomainSummary
  public var vcpus: Int
  public var maxMemoryKiB: UInt64
  public var usedMemoryKiB: UInt64
  public var osType: String
  /// The `skvm run` process (while it runs).
  public var pid: Int32?
  /// Its log (serial console output and the VMM's messages).
  public var log: String
  /// Its serial console's socket (while it runs).
  public var console: String?
  /// Its disks and CD-ROM drives (`domblklist`).
  public var disks: [DiskSummary]
  /// Its network interfaces (`domiflist`).
  public var interfaces: [InterfaceSummary]

  public init(
    summary: DomainSummary, vcpus: Int, maxMemoryKiB: UInt64, usedMemoryKiB: UInt64, osType: String, pid: Int32?,
    log: String, console: String?, disks: [DiskSummary], interfaces: [InterfaceSummary]
  ) {
    self.summary = summary
    self.vcpus = vcpus
    self.maxMemoryKiB = maxMemoryKiB
    self.usedMemoryKiB = usedMemoryKiB
    self.osType = osType
    self.pid = pid
    self.log = log
    self.console = console
    self.disks = disks
    self.interfaces = interfaces
  }
}

/// A disk as `domblklist` lists it.
public struct DiskSummary: Sendable, Codable, Equatable {
  /// `disk` or `cdrom`.
  public var device: String
  public var target: String
  public var source: String?
  public init(device: String, target: String, source: String?) {
    self.device = device
    self.target = target
    self.source = source
  }
}

/// A network interface as `domiflist` lists it.
public struct InterfaceSummary: Sendable, Codable, Equatable {
  /// The host device (a tap), if named.
  public var device: String?
  /// `ethernet`, `bridge` or `user`.
  public var type: String
  /// The bridge, for `bridge`.
  public var source: String?
  public var model: String
  public var mac: String?
  public init(device: String?, type: String, source: String?, model: String, mac: String?) {
    self.device = device
    self.type = type
    self.source = source
    self.model = model
    self.mac = mac
  }
}

/// The answer to `define`: the domain and what the definition's reader remarked.
public struct DefineResult: Sendable, Codable, Equatable {
  public var domain: DomainSummary
  public var warnings: [String]
  public init(domain: DomainSummary, warnings: [String]) {
    self.domain = domain
    self.warnings = warnings
  }
}

/// A lifecycle change, as `event --loop` prints it.
public struct DomainEvent: Sendable, Codable, Equatable {
  public var name: String
  public var uuid: String
  /// libvirt's event words: Defined, Undefined, Started, Suspended, Resumed, Stopped, Shutdown…
  public var event: String
  public var detail: String
  public var timestamp: Double
  public init(name: String, uuid: String, event: String, detail: String, timestamp: Double) {
    self.name = name
    self.uuid = uuid
    self.event = event
    self.detail = detail
    self.timestamp = timestamp
  }
}

/// The answer to `clone`: the new domain and the images made for it.
public struct CloneResult: Sendable, Codable, Equatable {
  public var domain: DomainSummary
  public var images: [String]
  public init(domain: DomainSummary, images: [String]) {
    self.domain = domain
    self.images = images
  }
}

/// `{"name": "web-2", "linked": true}`: the body of `POST …/clone`.
public struct CloneRequest: Sendable, Codable, Equatable {
  public var name: String
  public var linked: Bool?
  public init(name: String, linked: Bool) {
    self.name = name
    self.linked = linked
  }
}

/// One vCPU's host CPUs (`vcpupin`).
public struct VCPUPin: Sendable, Codable, Equatable {
  public var vcpu: Int
  /// A CPU list: `0-3,6`.
  public var cpuset: String
  public init(vcpu: Int, cpuset: String) {
    self.vcpu = vcpu
    self.cpuset = cpuset
  }
}

/// `{"vcpu": 0, "cpuset": "1", "live": true, "config": false}`: the body of `PUT …/vcpupin`.
public struct VCPUPinRequest: Sendable, Codable, Equatable {
  public var vcpu: Int
  public var cpuset: String
  public var live: Bool?
  public var config: Bool?
  public init(vcpu: Int, cpuset: String, live: Bool?, config: Bool?) {
    self.vcpu = vcpu
    self.cpuset = cpuset
    self.live = live
    self.config = config
  }
}
