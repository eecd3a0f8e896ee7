import JSON

/// A QMP error reply: QEMU's error class and a description (QAPI `QapiErrorClass`).
public struct QMPError: Error, Equatable, CustomStringConvertible {
  /// The classes QEMU still uses.
  public enum Class: String, Sendable {
    case genericError = "GenericError"
    case commandNotFound = "CommandNotFound"
    case deviceNotActive = "DeviceNotActive"
    case deviceNotFound = "DeviceNotFound"
    case kvmMissingCap = "KVMMissingCap"
  }

  public var errorClass: Class
  public var description: String

  public init(_ errorClass: Class = .genericError, _ description: String) {
    self.errorClass = errorClass
    self.description = description
  }

  /// The `error` member of the reply.
  var json: JSONValue { ["class": .string(errorClass.rawValue), "desc": .string(description)] }
}
