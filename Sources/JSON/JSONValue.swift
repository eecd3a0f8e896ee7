#if canImport(FoundationEssentials)
  import FoundationEssentials
#else
  import Foundation
#endif

/// A JSON value with its types kept apart (a boolean is never a number, an integer never a
/// float): QMP messages and the JSON that `skvm img` prints. Parsing and printing go through
/// the standard library's `JSONDecoder`/`JSONEncoder` (FoundationEssentials), not a parser of
/// our own; the input is untrusted and its nesting is bounded by the caller.
public enum JSONValue: Sendable, Equatable, Hashable {
  case null
  case bool(Bool)
  case integer(Int64)
  /// An integer above `Int64.max` (64-bit addresses and sizes).
  case unsigned(UInt64)
  case double(Double)
  case string(String)
  case array([JSONValue])
  case object([String: JSONValue])

  /// Any integer, as `.integer` when it fits and `.unsigned` when it does not.
  public static func number(_ value: some BinaryInteger) -> JSONValue {
    if let signed = Int64(exactly: value) { return .integer(signed) }
    return UInt64(exactly: value).map { .unsigned($0) } ?? .double(Double(value))
  }

  /// The string, if this is one.
  public var string: String? {
    if case .string(let value) = self { return value }
    return nil
  }

  /// The integer, if this is one that fits an `Int`.
  public var integer: Int? {
    switch self {
    case .integer(let value): Int(exactly: value)
    case .unsigned(let value): Int(exactly: value)
    default: nil
    }
  }

  /// The boolean, if this is one.
  public var bool: Bool? {
    if case .bool(let value) = self { return value }
    return nil
  }

  /// The members, if this is an object.
  public var object: [String: JSONValue]? {
    if case .object(let value) = self { return value }
    return nil
  }

  /// The elements, if this is an array.
  public var array: [JSONValue]? {
    if case .array(let value) = self { return value }
    return nil
  }

  /// The member `key` of an object (nil for anything else).
  public subscript(key: String) -> JSONValue? { object?[key] }

  /// Element `index` of an array (nil for anything else, or past its end).
  public subscript(index: Int) -> JSONValue? {
    guard let array, array.indices.contains(index) else { return nil }
    return array[index]
  }
}

extension JSONValue: Codable {
  public init(from decoder: any Decoder) throws {
    let container = try decoder.singleValueContainer()
    if container.decodeNil() {
      self = .null
    } else if let value = try? container.decode(Bool.self) {
      self = .bool(value)
    } else if let value = try? container.decode(Int64.self) {
      self = .integer(value)
    } else if let value = try? container.decode(UInt64.self) {
      self = .unsigned(value)
    } else if let value = try? container.decode(Double.self) {
      self = .double(value)
    } else if let value = try? container.decode(String.self) {
      self = .string(value)
    } else if let value = try? container.decode([JSONValue].self) {
      self = .array(value)
    } else {
      self = .object(try container.decode([String: JSONValue].self))
    }
  }

  public func encode(to encoder: any Encoder) throws {
    var container = encoder.singleValueContainer()
    switch self {
    case .null: try container.encodeNil()
    case .bool(let value): try container.encode(value)
    case .integer(let value): try container.encode(value)
    case .unsigned(let value): try container.encode(value)
    case .double(let value): try container.encode(value)
    case .string(let value): try container.encode(value)
    case .array(let value): try container.encode(value)
    case .object(let value): try container.encode(value)
    }
  }
}

extension JSONValue {
  /// A reason JSON text could not be read.
  public struct ParseError: Error, CustomStringConvertible {
    public let description: String
  }

  /// Parses one JSON text (any value at the top level).
  public static func parse(_ bytes: [UInt8]) throws(ParseError) -> JSONValue {
    do {
      return try JSONDecoder().decode(JSONValue.self, from: Data(bytes))
    } catch {
      throw ParseError(description: "\(error)")
    }
  }

  /// The compact JSON text, object members sorted by key (as QMP replies are compared).
  public var compactText: [UInt8] { encoded(pretty: false) }

  /// The indented JSON text, object members sorted by key (as `skvm img --output json` prints).
  public var prettyText: String { String(decoding: encoded(pretty: true), as: UTF8.self) }

  private func encoded(pretty: Bool) -> [UInt8] {
    let encoder = JSONEncoder()
    encoder.outputFormatting =
      pretty ? [.sortedKeys, .withoutEscapingSlashes, .prettyPrinted] : [.sortedKeys, .withoutEscapingSlashes]
    // Every case encodes (non-finite doubles aside, which nothing here produces).
    guard let data = try? encoder.encode(self) else { return Array(#""unencodable""#.utf8) }
    return [UInt8](data)
  }
}

extension JSONValue: ExpressibleByStringLiteral, ExpressibleByIntegerLiteral, ExpressibleByBooleanLiteral,
  ExpressibleByArrayLiteral, ExpressibleByDictionaryLiteral, ExpressibleByNilLiteral, ExpressibleByFloatLiteral
{
  public init(stringLiteral value: String) { self = .string(value) }
  public init(integerLiteral value: Int64) { self = .integer(value) }
  public init(booleanLiteral value: Bool) { self = .bool(value) }
  public init(arrayLiteral elements: JSONValue...) { self = .array(elements) }
  public init(dictionaryLiteral elements: (String, JSONValue)...) {
    self = .object(Dictionary(elements, uniquingKeysWith: { _, last in last }))
  }
  public init(nilLiteral: ()) { self = .null }
  public init(floatLiteral value: Double) { self = .double(value) }
}
