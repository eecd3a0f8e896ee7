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

  public init(record: DomainRecord, title: String?) {
    id = record.state.isActive ? record.domainID : nil
    name = record.name
    uuid = record.uuid
    state = record.state
    reason = record.reason
    persistent = record.persistent
    autostart = record.autostart
    template = record.template
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
}

/// The answer to `define`: the domain and what the definition's reader remarked.
public struct DefineResult: Sendable, Codable, Equatable {
  public var domain: DomainSummary
  public var warnings: [String]
}

/// A lifecycle change, as `event --loop` prints it.
public struct DomainEvent: Sendable, Codable, Equatable {
  public var name: String
  public var uuid: String
  /// libvirt's event words: Defined, Undefined, Started, Suspended, Resumed, Stopped, Shutdown…
  public var event: String
  public var detail: String
  public var timestamp: Double
}

/// The answer to `clone`: the new domain and the images made for it.
public struct CloneResult: Sendable, Codable, Equatable {
  public var domain: DomainSummary
  public var images: [String]
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
