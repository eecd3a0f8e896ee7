/// Cuts a byte stream into top-level JSON values without parsing them, the way QEMU's
/// JSON streamer does: objects and arrays end at their matching bracket (brackets inside
/// strings do not count), bare words and numbers at whitespace.
///
/// A client may send anything: a value longer than `maximumValueSize` or nested deeper
/// than `maximumDepth` is reported (`.tooLarge`) instead of buffered, so memory stays bounded.
struct JSONStreamSplitter {
  /// What a chunk of input completed.
  enum Piece: Equatable {
    /// The bytes of one top-level value (possibly invalid JSON: parsing is the caller's).
    case value([UInt8])
    /// A value grew past the limits; the stream cannot be resynchronised.
    case tooLarge
  }

  let maximumValueSize: Int
  let maximumDepth: Int
  private var current: [UInt8] = []
  private var depth = 0
  private var inString = false
  private var escaped = false
  private var inWord = false
  private var failed = false

  init(maximumValueSize: Int = 1 << 20, maximumDepth: Int = 64) {
    self.maximumValueSize = maximumValueSize
    self.maximumDepth = maximumDepth
  }

  /// Consumes `bytes`; returns the values they completed, in order.
  mutating func feed(_ bytes: some Sequence<UInt8>) -> [Piece] {
    var pieces: [Piece] = []
    guard !failed else { return pieces }
    for byte in bytes {
      if inWord {
        if Self.isWhitespace(byte) || Self.opens(byte) || byte == UInt8(ascii: "\"") {
          pieces.append(.value(current))
          reset()
        } else {
          current.append(byte)
          if current.count > maximumValueSize { return fail(pieces) }
          continue
        }
      }
      if current.isEmpty {
        if Self.isWhitespace(byte) { continue }
        current.append(byte)
        if Self.opens(byte) {
          depth = 1
        } else if byte == UInt8(ascii: "\"") {
          inString = true
        } else if Self.closes(byte) {
          pieces.append(.value(current))
          reset()
        } else {
          inWord = true
        }
        continue
      }
      current.append(byte)
      if current.count > maximumValueSize { return fail(pieces) }
      if inString {
        if escaped {
          escaped = false
        } else if byte == UInt8(ascii: "\\") {
          escaped = true
        } else if byte == UInt8(ascii: "\"") {
          inString = false
          if depth == 0 {
            pieces.append(.value(current))
            reset()
          }
        }
      } else if byte == UInt8(ascii: "\"") {
        inString = true
      } else if Self.opens(byte) {
        depth += 1
        if depth > maximumDepth { return fail(pieces) }
      } else if Self.closes(byte) {
        depth -= 1
        if depth == 0 {
          pieces.append(.value(current))
          reset()
        }
      }
    }
    return pieces
  }

  /// True while part of a value is buffered.
  var hasPartialValue: Bool { !current.isEmpty }

  private mutating func fail(_ pieces: [Piece]) -> [Piece] {
    failed = true
    current = []
    return pieces + [.tooLarge]
  }

  private mutating func reset() {
    current.removeAll(keepingCapacity: current.count <= 4096)
    depth = 0
    inString = false
    escaped = false
    inWord = false
  }

  private static func isWhitespace(_ byte: UInt8) -> Bool {
    byte == 0x20 || byte == 0x0A || byte == 0x0D || byte == 0x09
  }
  private static func opens(_ byte: UInt8) -> Bool { byte == UInt8(ascii: "{") || byte == UInt8(ascii: "[") }
  private static func closes(_ byte: UInt8) -> Bool { byte == UInt8(ascii: "}") || byte == UInt8(ascii: "]") }
}
