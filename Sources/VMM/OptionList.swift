/// A command-line value in QEMU's option-list syntax, `MAIN[,KEY=VALUE|,KEY]...`, parsed
/// without trusting it: empty keys, empty items and repeated keys are errors that name the
/// item, never a trap. A bare `KEY` means `KEY=on`, as in QEMU.
///
/// ```swift
/// let list = try OptionList(parsing: "disk.qcow2,readonly=on,cache=none")
/// list.main            // "disk.qcow2"
/// list.value("cache")  // "none"
/// ```
public struct OptionList: Sendable, Equatable {
  /// What comes before the first comma (a path, `unix:PATH`, a back-end name).
  public var main: String
  /// The `KEY=VALUE` items after it, in order.
  public var options: [(key: String, value: String)]

  /// Why a value could not be parsed; the message names the offending item.
  public struct ParseError: Error, CustomStringConvertible, Equatable {
    public let description: String
  }

  /// Parses `text`; keys in `repeatable` may be given more than once (each occurrence kept, in order).
  public init(parsing text: String, repeatable: Set<String> = []) throws(ParseError) {
    var items = text.split(separator: ",", omittingEmptySubsequences: false).map(String.init)
    main = items.isEmpty ? "" : items.removeFirst()
    options = []
    for (index, item) in items.enumerated() {
      guard !item.isEmpty else {
        throw ParseError(description: "item \(index + 2) of '\(text)' is empty (a stray comma?)")
      }
      let parts = item.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false).map(String.init)
      let key = parts[0]
      guard !key.isEmpty else { throw ParseError(description: "'\(item)' in '\(text)' has no option name before '='") }
      guard repeatable.contains(key) || !options.contains(where: { $0.key == key }) else {
        throw ParseError(description: "option '\(key)' is given twice in '\(text)'")
      }
      options.append((key, parts.count == 2 ? parts[1] : "on"))
    }
  }

  /// The value of `key`, if given.
  public func value(_ key: String) -> String? { options.first { $0.key == key }?.value }

  public static func == (left: OptionList, right: OptionList) -> Bool {
    left.main == right.main && left.options.map(\.key) == right.options.map(\.key)
      && left.options.map(\.value) == right.options.map(\.value)
  }
}
