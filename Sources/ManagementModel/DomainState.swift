/// A domain's state as virsh shows it (`domstate`), with the reason (`domstate --reason`).
public enum DomainState: String, Sendable, Codable, CaseIterable {
  case running
  case paused
  case inShutdown = "in shutdown"
  case shutOff = "shut off"
  case crashed

  /// libvirt's state number (virDomainState), for scripts that read numbers.
  public var number: Int {
    switch self {
    case .running: 1
    case .paused: 3
    case .inShutdown: 4
    case .shutOff: 5
    case .crashed: 6
    }
  }

  /// True while a process runs the domain.
  public var isActive: Bool { self == .running || self == .paused || self == .inShutdown }
}

/// Why a domain is in its state, in libvirt's words (`virsh domstate --reason`).
public enum DomainStateReason: String, Sendable, Codable {
  // running
  case booted, unpaused, restored, migrated
  // paused
  case user, migrating
  // shut off
  case shutdown, destroyed, crashed, failed, unknown, saved
  // in shutdown (no reason beyond the state) / crashed
  case panicked
}
