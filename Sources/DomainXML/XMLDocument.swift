import Foundation

#if canImport(FoundationXML)
  import FoundationXML
#endif

/// A parsed XML element: name, attributes, child elements and the text directly inside it.
/// Only what domain XML needs: no DTDs, no entities beyond XML's five, no processing instructions.
struct XMLElementNode: Sendable {
  var name: String
  var attributes: [(name: String, value: String)] = []
  var children: [XMLElementNode] = []
  var text = ""
  /// The line it starts on (for error messages).
  var line: Int

  func attribute(_ name: String) -> String? { attributes.first { $0.name == name }?.value }
  func children(named name: String) -> [XMLElementNode] { children.filter { $0.name == name } }
  /// The trimmed text inside the element.
  var trimmedText: String { text.trimmingCharacters(in: .whitespacesAndNewlines) }
}

/// Why an XML document was refused.
public struct XMLDocumentError: Error, CustomStringConvertible, Equatable {
  public let description: String
  init(_ description: String) { self.description = description }
}

/// Reads an untrusted XML document into ``XMLElementNode``s with libxml2 (through Foundation's
/// `XMLParser`), refusing what domain XML never needs and attacks use: documents over
/// `maximumSize`, anything but UTF-8, a DOCTYPE (so no entity can be declared: no external
/// entities, no expansion bombs), more than `maximumElements` elements or nesting deeper than
/// `maximumDepth`.
enum XMLDocumentReader {
  static let maximumSize = 1 << 20
  static let maximumElements = 20_000
  static let maximumDepth = 32

  static func parse(_ bytes: [UInt8]) throws(XMLDocumentError) -> XMLElementNode {
    guard bytes.count <= maximumSize else {
      throw XMLDocumentError("the document is \(bytes.count) bytes; at most \(maximumSize) (1 MiB) are accepted")
    }
    guard let text = String(validating: bytes, as: UTF8.self) else {
      throw XMLDocumentError("the document is not UTF-8 text")
    }
    if bytes.starts(with: [0xEF, 0xBB, 0xBF]) == false, bytes.first == 0xFE || bytes.first == 0xFF {
      throw XMLDocumentError("the document is not UTF-8 text")
    }
    if text.contains("\0") { throw XMLDocumentError("the document contains a NUL character") }
    if text.contains("<!DOCTYPE") || text.contains("<!ENTITY") {
      throw XMLDocumentError("DOCTYPE and ENTITY declarations are not accepted in domain XML")
    }
    if let declarationEnd = text.range(of: "?>"), text.hasPrefix("<?xml") {
      let declaration = text[..<declarationEnd.lowerBound].lowercased()
      if let encoding = declaration.range(of: "encoding") {
        let rest = declaration[encoding.upperBound...].drop { $0 == " " || $0 == "=" || $0 == "\"" || $0 == "'" }
        if !rest.hasPrefix("utf-8") {
          throw XMLDocumentError("the XML declaration names an encoding other than UTF-8")
        }
      }
    }
    let delegate = TreeBuilder()
    let parser = XMLParser(data: Data(bytes))
    parser.shouldResolveExternalEntities = false
    parser.shouldProcessNamespaces = false
    parser.delegate = delegate
    let parsed = parser.parse()
    if let failure = delegate.failure { throw failure }
    guard parsed, let root = delegate.root else {
      throw XMLDocumentError("malformed XML near line \(parser.lineNumber), column \(parser.columnNumber)")
    }
    return root
  }

  private final class TreeBuilder: NSObject, XMLParserDelegate {
    var stack: [XMLElementNode] = []
    var root: XMLElementNode?
    var failure: XMLDocumentError?
    var elements = 0

    func fail(_ parser: XMLParser, _ message: String) {
      if failure == nil { failure = XMLDocumentError(message) }
      parser.abortParsing()
    }

    func parser(
      _ parser: XMLParser, didStartElement elementName: String, namespaceURI: String?, qualifiedName: String?,
      attributes: [String: String]
    ) {
      elements += 1
      if elements > XMLDocumentReader.maximumElements {
        return fail(parser, "the document has more than \(XMLDocumentReader.maximumElements) elements")
      }
      if stack.count >= XMLDocumentReader.maximumDepth {
        return fail(parser, "elements nest deeper than \(XMLDocumentReader.maximumDepth) levels")
      }
      if root != nil && stack.isEmpty { return fail(parser, "more than one root element") }
      var node = XMLElementNode(name: elementName, line: parser.lineNumber)
      node.attributes = attributes.sorted { $0.key < $1.key }.map { (name: $0.key, value: $0.value) }
      stack.append(node)
    }

    func parser(
      _ parser: XMLParser, didEndElement elementName: String, namespaceURI: String?, qualifiedName: String?
    ) {
      guard let node = stack.popLast() else { return fail(parser, "an end tag without a start tag") }
      if stack.isEmpty {
        root = node
      } else {
        stack[stack.count - 1].children.append(node)
      }
    }

    func parser(_ parser: XMLParser, foundCharacters string: String) {
      guard !stack.isEmpty else { return }
      stack[stack.count - 1].text += string
    }

    func parser(_ parser: XMLParser, foundCDATA CDATABlock: Data) {
      guard !stack.isEmpty else { return }
      stack[stack.count - 1].text += String(decoding: CDATABlock, as: UTF8.self)
    }

    func parser(_ parser: XMLParser, foundInternalEntityDeclarationWithName name: String, value: String?) {
      fail(parser, "entity declarations are not accepted (\(name))")
    }

    func parser(
      _ parser: XMLParser, foundExternalEntityDeclarationWithName name: String, publicID: String?, systemID: String?
    ) {
      fail(parser, "external entities are not accepted (\(name))")
    }

    func parser(_ parser: XMLParser, resolveExternalEntityName name: String, systemID: String?) -> Data? {
      fail(parser, "external entities are not accepted (\(name))")
      return nil
    }

    func parser(_ parser: XMLParser, foundProcessingInstructionWithTarget target: String, data: String?) {
      fail(parser, "processing instructions are not accepted (<?\(target) …?>)")
    }
  }
}

/// Writes XML text with the five predefined escapes.
struct XMLTextWriter {
  private(set) var text = ""
  private var depth = 0

  /// `value` with XML's five escapes, and carriage returns as character references (a parser
  /// turns a literal one into a newline); in an attribute also newlines and tabs (a parser turns
  /// literal ones into spaces), so that what is written reads back the same.
  static func escape(_ value: String, attribute: Bool = false) -> String {
    var result = ""
    result.reserveCapacity(value.utf8.count)
    for scalar in value.unicodeScalars {
      switch scalar {
      case "&": result += "&amp;"
      case "<": result += "&lt;"
      case ">": result += "&gt;"
      case "\"": result += "&quot;"
      case "'": result += "&apos;"
      case "\r": result += "&#13;"
      case "\n" where attribute: result += "&#10;"
      case "\t" where attribute: result += "&#9;"
      default: result.unicodeScalars.append(scalar)
      }
    }
    return result
  }

  private func tag(_ name: String, _ attributes: [(String, String?)]) -> String {
    var result = "<" + name
    for (key, value) in attributes {
      if let value { result += " \(key)='\(Self.escape(value, attribute: true))'" }
    }
    return result
  }

  /// `<name attr='…'>text</name>` (or `<name …/>` without text).
  mutating func element(_ name: String, _ attributes: [(String, String?)] = [], text: String? = nil) {
    let indent = String(repeating: "  ", count: depth)
    if let text {
      self.text += indent + tag(name, attributes) + ">" + Self.escape(text) + "</\(name)>\n"
    } else {
      self.text += indent + tag(name, attributes) + "/>\n"
    }
  }

  /// `<name …>`, the children `body` writes, `</name>`.
  mutating func container(_ name: String, _ attributes: [(String, String?)] = [], _ body: (inout XMLTextWriter) -> Void)
  {
    self.text += String(repeating: "  ", count: depth) + tag(name, attributes) + ">\n"
    depth += 1
    body(&self)
    depth -= 1
    self.text += String(repeating: "  ", count: depth) + "</\(name)>\n"
  }
}
