/// The `arguments` of a QMP command, checked the way QEMU's generated unmarshallers
/// check them: a missing or mistyped parameter and an unknown one are errors that name it.
struct QMPArguments {
  private let values: [String: Any]

  /// Checks that only `allowed` parameters are present.
  init(_ values: [String: Any], allowed: Set<String>) throws(QMPError) {
    if let unexpected = values.keys.sorted().first(where: { !allowed.contains($0) }) {
      throw QMPError(.genericError, "Parameter '\(unexpected)' is unexpected")
    }
    self.values = values
  }

  func string(_ name: String) throws(QMPError) -> String? {
    guard let value = values[name] else { return nil }
    guard let text = value as? String else { throw Self.invalidType(name, "string") }
    return text
  }

  func requiredString(_ name: String) throws(QMPError) -> String {
    guard let text = try string(name) else { throw QMPError(.genericError, "Parameter '\(name)' is missing") }
    return text
  }

  func integer(_ name: String) throws(QMPError) -> Int? {
    guard let value = values[name] else { return nil }
    // JSONSerialization makes true/false NSNumbers too; QEMU rejects them for integers.
    guard let number = value as? Int, !(value is Bool), !Self.isBoolean(value) else {
      throw Self.invalidType(name, "integer")
    }
    return number
  }

  func stringArray(_ name: String) throws(QMPError) -> [String]? {
    guard let value = values[name] else { return nil }
    guard let array = value as? [Any], let strings = array as? [String] else { throw Self.invalidType(name, "array") }
    return strings
  }

  private static func isBoolean(_ value: Any) -> Bool {
    String(describing: type(of: value)).contains("Bool")
  }

  private static func invalidType(_ name: String, _ expected: String) -> QMPError {
    QMPError(.genericError, "Invalid parameter type for '\(name)', expected: \(expected)")
  }
}
