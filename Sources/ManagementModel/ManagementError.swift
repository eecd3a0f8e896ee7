/// Why a management request failed: a machine-readable code (the API's `error.code`), an HTTP
/// status, and a message that says what was wrong and what to do.
public struct ManagementError: Error, CustomStringConvertible, Sendable, Equatable {
  /// The kinds of failure, as the API names them.
  public enum Code: String, Sendable, Codable {
    case noDomain = "no-domain"
    case invalidDefinition = "invalid-definition"
    case alreadyExists = "already-exists"
    case operationInvalid = "operation-invalid"
    case busy = "busy"
    case startFailed = "start-failed"
    case badRequest = "bad-request"
    case noResource = "no-resource"
    case readOnly = "read-only"
    case internalError = "internal-error"
  }

  public let code: Code
  public let message: String

  public init(_ code: Code, _ message: String) {
    self.code = code
    self.message = message
  }

  public var description: String { message }

  /// The HTTP status the API answers with.
  public var httpStatus: Int {
    switch code {
    case .noDomain, .noResource: 404
    case .invalidDefinition, .badRequest: 400
    case .alreadyExists, .operationInvalid, .busy: 409
    case .startFailed: 422
    case .readOnly: 403
    case .internalError: 500
    }
  }

  public static func noDomain(_ reference: String) -> ManagementError {
    ManagementError(.noDomain, "failed to get domain '\(reference)': no domain with a matching name, UUID or id")
  }
}
