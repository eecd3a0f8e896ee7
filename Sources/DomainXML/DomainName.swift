import Foundation

/// The rules for domain names and UUIDs as the CLI and the daemon take them.
public enum DomainName {
  /// Nil when `name` is usable; otherwise why not.
  public static func problem(_ name: String) -> String? {
    if name.isEmpty { return "a domain name cannot be empty" }
    if name.utf8.count > 200 { return "'\(name.prefix(40))…' is longer than 200 bytes" }
    if name.contains("/") { return "'\(name)' contains '/' (names become file names)" }
    if name.unicodeScalars.contains(where: { $0.properties.generalCategory == .control }) {
      return "the name contains control characters"
    }
    if name.hasPrefix(".") { return "'\(name)' starts with '.'" }
    if name.trimmingCharacters(in: .whitespaces) != name { return "'\(name)' starts or ends with a space" }
    if name.allSatisfy(\.isNumber) { return "'\(name)' is all digits: it would be taken for a domain id" }
    if uuid(name) != nil { return "'\(name)' is a UUID: it would be taken for the domain's UUID" }
    return nil
  }

  /// A UUID in its usual text form (with or without dashes), or nil.
  public static func uuid(_ text: String) -> UUID? {
    if let uuid = UUID(uuidString: text) { return uuid }
    guard text.count == 32, text.allSatisfy(\.isHexDigit) else { return nil }
    var dashed = text
    for offset in [20, 16, 12, 8] { dashed.insert("-", at: dashed.index(dashed.startIndex, offsetBy: offset)) }
    return UUID(uuidString: dashed)
  }
}
