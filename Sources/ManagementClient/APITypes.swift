/// The API's error document: `{"error": {"code": "no-domain", "message": "…"}}`.
public struct APIErrorBody: Codable, Sendable {
  public struct Detail: Codable, Sendable {
    public var code: String
    public var message: String
    public init(code: String, message: String) {
      self.code = code
      self.message = message
    }
  }
  public var error: Detail
  public init(error: Detail) { self.error = error }
}

/// `{"enabled": true}`: the body of `PUT …/autostart` and `PUT …/template`.
public struct APIFlag: Codable, Sendable {
  public var enabled: Bool
  public init(enabled: Bool) { self.enabled = enabled }
}

/// `{"command": "info status", "hmp": true}`: the body of `POST …/monitor`.
public struct APIMonitorRequest: Codable, Sendable {
  public var command: String
  public var hmp: Bool?
  public init(command: String, hmp: Bool) {
    self.command = command
    self.hmp = hmp
  }
}

/// The daemon's version and instance (`GET /v1/version`).
public struct APIVersion: Codable, Sendable {
  public var version: String
  public var stateDirectory: String
  public var runtimeDirectory: String
  public init(version: String, stateDirectory: String, runtimeDirectory: String) {
    self.version = version
    self.stateDirectory = stateDirectory
    self.runtimeDirectory = runtimeDirectory
  }
}
