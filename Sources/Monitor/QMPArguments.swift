import JSON

/// The `arguments` of a QMP command, checked the way QEMU's generated unmarshallers
/// check them: a missing or mistyped parameter and an unknown one are errors that name it.
struct QMPArguments {
  private let values: [String: JSONValue]

  /// Checks that only `allowed` parameters are present.
  init(_ values: [String: JSONValue], allowed: Set<String>) throws(QMPError) {
    if let unexpected = values.keys.sorted().first(where: { !allowed.contains($0) }) {
      throw QMPError(.genericError, "Parameter '\(unexpected)' is unexpected")
    }
    self.values = values
  }

  func string(_ name: String) throws(QMPError) -> String? {
    guard let value = values[name] else { return nil }
    guard let text = value.string else { throw Self.invalidType(name, "string") }
    return text
  }

  func requiredString(_ name: String) throws(QMPError) -> String {
    guard let text = try string(name) else { throw QMPError(.genericError, "Parameter '\(name)' is missing") }
    return text
  }

  func boolean(_ name: String) throws(QMPError) -> Bool? {
    guard let value = values[name] else { return nil }
    guard let flag = value.bool else { throw Self.invalidType(name, "boolean") }
    return flag
  }

  func integer(_ name: String) throws(QMPError) -> Int? {
    guard let value = values[name] else { return nil }
    // A boolean is not an integer (QEMU rejects true/false there too).
    guard let number = value.integer else { throw Self.invalidType(name, "integer") }
    return number
  }

  func stringArray(_ name: String) throws(QMPError) -> [String]? {
    guard let value = values[name] else { return nil }
    guard let array = value.array else { throw Self.invalidType(name, "array") }
    var strings: [String] = []
    for element in array {
      guard let text = element.string else { throw Self.invalidType(name, "array") }
      strings.append(text)
    }
    return strings
  }

  private static func invalidType(_ name: String, _ expected: String) -> QMPError {
    QMPError(.genericError, "Invalid parameter type for '\(name)', expected: \(expected)")
  }
}
