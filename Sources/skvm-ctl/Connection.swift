import FoundationEssentials
import Glibc
import JSON
import ManagementClient
import ManagementModel
import NIOHTTP1

/// Which daemon the CLI talks to, chosen before the verb as virsh's `-c URI` / `-r`: `system`,
/// `session` (or `qemu:///system`, `qemu:///session`), or a socket path; `$SKVM_CONNECT`
/// otherwise; the system instance for root, the session one for others.
enum Connection {
  nonisolated(unsafe) static var name: String?
  nonisolated(unsafe) static var readOnly = false

  /// Takes `-c X`, `--connect X`, `--connect=X`, `-r`, `--readonly` from before the verb.
  static func extract(_ arguments: [String]) -> [String] {
    var rest: [String] = []
    var index = 0
    while index < arguments.count {
      let argument = arguments[index]
      if rest.isEmpty || rest.allSatisfy({ $0.hasPrefix("-") }) {
        if argument == "-c" || argument == "--connect", index + 1 < arguments.count {
          name = arguments[index + 1]
          index += 2
          continue
        }
        if argument.hasPrefix("--connect=") {
          name = String(argument.dropFirst("--connect=".count))
          index += 1
          continue
        }
        if argument == "-r" || argument == "--readonly" {
          readOnly = true
          index += 1
          continue
        }
      }
      rest.append(argument)
      index += 1
    }
    return rest
  }

  static func socketPath() throws -> String {
    try socketPath(of: name ?? ProcessInfo.processInfo.environment["SKVM_CONNECT"])
  }

  /// The socket of the daemon `chosen` names (as `-c` does), or of the default one.
  static func socketPath(of chosen: String?) throws -> String {
    if let chosen {
      if chosen.hasPrefix("/") { return chosen }
      guard let paths = ManagementPaths.named(chosen) else {
        throw CLIError(
          "-c \(chosen): not a daemon (use system, session, qemu:///system, qemu:///session or a socket path)")
      }
      return readOnly ? paths.readOnlySocket : paths.socket
    }
    let paths = ManagementPaths.default
    return readOnly ? paths.readOnlySocket : paths.socket
  }

  /// Sends a request; returns the body of a 2xx answer, or throws the daemon's error message.
  static func call(
    _ method: HTTPMethod, _ target: String, body: [UInt8] = [], contentType: String = "application/json",
    socket: String? = nil
  ) async throws -> [UInt8] {
    let client = APIClient(socketPath: try socket ?? socketPath())
    let reply: APIClient.Reply
    do {
      reply = try client.request(method, target, body: body, contentType: contentType)
    } catch {
      throw CLIError(error.description)
    }
    guard (200..<300).contains(reply.status) else {
      if let error = try? JSONDecoder().decode(APIErrorBody.self, from: Data(reply.body)) {
        throw CLIError(error.error.message)
      }
      throw CLIError("skvmd answered \(reply.status): \(reply.text)")
    }
    return reply.body
  }

  static func decode<T: Decodable>(_ type: T.Type, _ body: [UInt8]) throws -> T {
    do {
      return try JSONDecoder().decode(type, from: Data(body))
    } catch {
      throw CLIError("skvmd's answer was not understood: \(error)")
    }
  }

  /// The path segment for a domain reference (name, UUID or id).
  static func domainPath(_ reference: String, _ suffix: String = "") -> String {
    // Percent-encoding of everything but unreserved characters (RFC 3986).
    var escaped = ""
    for byte in reference.utf8 {
      let unreserved =
        (byte >= 0x41 && byte <= 0x5A) || (byte >= 0x61 && byte <= 0x7A) || (byte >= 0x30 && byte <= 0x39)
        || byte == 0x2D || byte == 0x2E || byte == 0x5F || byte == 0x7E
      if unreserved {
        escaped.append(Character(Unicode.Scalar(byte)))
      } else {
        escaped += "%" + String(byte >> 4, radix: 16, uppercase: true) + String(byte & 0xF, radix: 16, uppercase: true)
      }
    }
    return "/v1/domains/\(escaped)" + suffix
  }
}

/// A failure the CLI reports as `error: …` with exit status 1 (as virsh does).
struct CLIError: Error, CustomStringConvertible {
  let description: String
  init(_ description: String) { self.description = description }
}
