/// The body of `POST /v1/incoming-migrations` on the destination daemon: the domain that will
/// arrive (its XML), whether to keep it defined there, where to listen, and whether to run it
/// once it has arrived.
public struct IncomingMigrationRequest: Sendable, Codable, Equatable {
  /// The domain's definition, as the source runs it.
  public var xml: String
  /// Define it persistently here once it has arrived (virsh `--persistent`); else it is transient.
  public var persistent: Bool?
  /// `tcp:HOST[:PORT]` to listen on; loopback and a free port unless given.
  public var listen: String?
  /// Leave it paused once it has arrived (virsh `--suspend`).
  public var suspend: Bool?

  public init(xml: String, persistent: Bool, listen: String?, suspend: Bool) {
    self.xml = xml
    self.persistent = persistent
    self.listen = listen
    self.suspend = suspend
  }
}

/// The destination's answer: the domain waiting for its machine, and the URI its source sends to.
public struct IncomingMigrationReply: Sendable, Codable, Equatable {
  public var domain: DomainSummary
  /// `tcp:HOST:PORT`, for QMP `migrate` on the source.
  public var uri: String

  public init(domain: DomainSummary, uri: String) {
    self.domain = domain
    self.uri = uri
  }
}

/// The body of `POST /v1/domains/{domain}/migrate` on the source daemon.
public struct MigrationRequest: Sendable, Codable, Equatable {
  /// Where the destination listens: `tcp:HOST:PORT` (from `IncomingMigrationReply`).
  public var uri: String
  /// Keep the guest running while its memory is copied (virsh `--live`); otherwise it is paused first.
  public var live: Bool?
  /// Seconds of live copying after which the guest is paused so that the copy completes (virsh `--timeout`).
  public var timeout: Int?
  /// Forget the domain here once it runs on the destination (virsh `--undefinesource`).
  public var undefineSource: Bool?

  public init(uri: String, live: Bool, timeout: Int?, undefineSource: Bool) {
    self.uri = uri
    self.live = live
    self.timeout = timeout
    self.undefineSource = undefineSource
  }
}
