import Foundation
import JSON
import Management
import ManagementClient
import ManagementModel

/// One HTTP request as the router sees it (no socket, no NIO): tests call the router directly.
public struct APIRequest: Sendable {
  public var method: String
  /// The path without the query, percent-encoded as sent.
  public var path: String
  public var query: [String: String]
  public var body: [UInt8]

  public init(method: String, target: String, body: [UInt8] = []) {
    self.method = method
    let parts = target.split(separator: "?", maxSplits: 1, omittingEmptySubsequences: false)
    path = String(parts[0])
    var query: [String: String] = [:]
    if parts.count > 1 {
      for pair in parts[1].split(separator: "&") {
        let keyValue = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
        let key = String(keyValue[0]).removingPercentEncoding ?? String(keyValue[0])
        let value = keyValue.count > 1 ? (String(keyValue[1]).removingPercentEncoding ?? String(keyValue[1])) : ""
        query[key] = value
      }
    }
    self.query = query
    self.body = body
  }
}

/// An answer: status, content type and body; or a stream of events (`GET /v1/events`).
public struct APIResponse: Sendable {
  public var status: Int
  public var contentType: String
  public var body: [UInt8]
  /// Set for the event stream: each event is one JSON line.
  public var events: AsyncStream<DomainEvent>?

  init(status: Int = 200, contentType: String = "application/json", body: [UInt8]) {
    self.status = status
    self.contentType = contentType
    self.body = body
  }

  static func json<T: Encodable>(_ value: T, status: Int = 200) -> APIResponse {
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.sortedKeys]
    let data = (try? encoder.encode(value)) ?? Data("{}".utf8)
    return APIResponse(status: status, body: Array(data) + [0x0A])
  }

  static func error(_ error: ManagementError) -> APIResponse {
    json(APIErrorBody(error: .init(code: error.code.rawValue, message: error.message)), status: error.httpStatus)
  }
}

/// The routes of the daemon's API (described in `Documentation/skvmd-openapi.yaml`).
public struct APIRouter: Sendable {
  let manager: DomainManager
  /// True for the monitoring socket: only GET.
  let readOnly: Bool
  let version: String

  public init(manager: DomainManager, readOnly: Bool, version: String) {
    self.manager = manager
    self.readOnly = readOnly
    self.version = version
  }

  /// Requests larger than this are refused (domain XML is at most 1 MiB).
  public static let maximumBodySize = (1 << 20) + 4096

  public func handle(_ request: APIRequest) async -> APIResponse {
    do {
      return try await route(request)
    } catch let error as ManagementError {
      return .error(error)
    } catch {
      return .error(ManagementError(.internalError, "\(error)"))
    }
  }

  private func route(_ request: APIRequest) async throws -> APIResponse {
    let segments = request.path.split(separator: "/", omittingEmptySubsequences: false).dropFirst().map {
      String($0).removingPercentEncoding ?? String($0)
    }
    guard request.path.hasPrefix("/"), segments.first == "v1" else {
      throw ManagementError(.noResource, "no such resource: \(request.path) (the API is under /v1)")
    }
    if readOnly && request.method != "GET" {
      throw ManagementError(
        .readOnly, "this socket is read-only (monitoring); use the read-write socket to change domains")
    }
    let rest = Array(segments.dropFirst())
    switch (request.method, rest.count, rest.first) {
    case ("GET", 1, "version"):
      return .json(
        APIVersion(
          version: version, stateDirectory: manager.paths.stateDirectory,
          runtimeDirectory: manager.paths.runtimeDirectory))
    case ("GET", 1, "events"):
      var response = APIResponse(contentType: "application/x-ndjson", body: [])
      response.events = await manager.events()
      return response
    case ("GET", 1, "domains"):
      return .json(try await manager.list(all: true))
    case ("POST", 1, "domains"):
      return .json(try await manager.define(request.body), status: 201)
    case ("POST", 1, "transient-domains"):
      return .json(try await manager.create(request.body), status: 201)
    case ("POST", 1, "incoming-migrations"):
      let incoming = try decode(IncomingMigrationRequest.self, request.body)
      return .json(try await manager.prepareIncoming(incoming), status: 201)
    case ("GET", 2, "domains"):
      return .json(try await manager.info(rest[1]))
    case ("DELETE", 2, "domains"):
      let removeStorage: Bool
      switch request.query["remove-all-storage"] {
      case nil, "0": removeStorage = false
      case "1": removeStorage = true
      case let other?: throw ManagementError(.badRequest, "remove-all-storage=\(other): give 0 or 1")
      }
      return .json(["removed": try await manager.undefine(rest[1], removeStorage: removeStorage)])
    case ("GET", 3, "domains") where rest[2] == "vcpupin":
      return .json(try await manager.vcpuPins(rest[1]))
    case ("PUT", 3, "domains") where rest[2] == "vcpupin":
      let pin = try decode(VCPUPinRequest.self, request.body)
      let info = try await manager.info(rest[1])
      // virsh's default (--current): the running domain if it runs, else its definition.
      let live = pin.live ?? (pin.config == nil && info.summary.state.isActive)
      let config = pin.config ?? (pin.live == nil && !info.summary.state.isActive)
      return .json(try await manager.pinVCPU(rest[1], vcpu: pin.vcpu, cpuset: pin.cpuset, live: live, config: config))
    case ("GET", 3, "domains") where rest[2] == "xml":
      return APIResponse(contentType: "application/xml", body: Array(try await manager.xml(rest[1]).utf8))
    case ("POST", 3, "domains") where rest[2] == "monitor":
      let command = try decode(APIMonitorRequest.self, request.body)
      let reply = try await manager.monitor(rest[1], command: command.command, human: command.hmp ?? false)
      return APIResponse(body: reply.compactText + [0x0A])
    case ("POST", 3, "domains") where rest[2] == "clone":
      let clone = try decode(CloneRequest.self, request.body)
      return .json(try await manager.clone(rest[1], name: clone.name, linked: clone.linked ?? false), status: 201)
    case ("POST", 3, "domains") where rest[2] == "migrate":
      let migration = try decode(MigrationRequest.self, request.body)
      return .json(try await manager.migrate(rest[1], migration))
    case ("POST", 3, "domains"):
      return .json(try await action(rest[2], rest[1], request))
    case ("PUT", 3, "domains") where rest[2] == "autostart" || rest[2] == "template":
      let flag = try decode(APIFlag.self, request.body)
      if rest[2] == "autostart" { return .json(try await manager.setAutostart(rest[1], flag.enabled)) }
      return .json(try await manager.setTemplate(rest[1], flag.enabled))
    default:
      throw ManagementError(.noResource, "no such resource or method: \(request.method) \(request.path)")
    }
  }

  private func action(_ action: String, _ domain: String, _ request: APIRequest) async throws -> DomainSummary {
    switch action {
    case "start": return try await manager.start(domain)
    case "destroy": return try await manager.destroy(domain)
    case "shutdown": return try await manager.shutdown(domain)
    case "reboot": return try await manager.reboot(domain)
    case "reset": return try await manager.reset(domain)
    case "suspend": return try await manager.suspend(domain)
    case "resume": return try await manager.resume(domain)
    default:
      throw ManagementError(
        .badRequest,
        "no such action: \(action) (start, destroy, shutdown, reboot, reset, suspend, resume, monitor, clone, migrate)")
    }
  }

  private func decode<T: Decodable>(_ type: T.Type, _ body: [UInt8]) throws(ManagementError) -> T {
    do {
      return try JSONDecoder().decode(type, from: Data(body))
    } catch {
      throw ManagementError(.badRequest, "the request body is not the JSON expected (\(T.self)): \(error)")
    }
  }
}
