import Testing

@testable import Monitor

@Suite("Cutting a QMP byte stream into JSON values")
struct JSONStreamSplitterTests {
  private func values(_ pieces: [JSONStreamSplitter.Piece]) -> [String] {
    pieces.compactMap { piece in
      if case .value(let bytes) = piece { return String(decoding: bytes, as: UTF8.self) }
      return nil
    }
  }

  @Test("Objects split across reads, with brackets and escaped quotes inside strings")
  func chunked() {
    var splitter = JSONStreamSplitter()
    let stream = #"{"execute": "a}\"{", "arguments": {"x": [1, {"y": 2}]}}  {"execute":"b"}"#
    var all: [String] = []
    for byte in stream.utf8 { all += values(splitter.feed([byte])) }
    #expect(all == [#"{"execute": "a}\"{", "arguments": {"x": [1, {"y": 2}]}}"#, #"{"execute":"b"}"#])
    #expect(!splitter.hasPartialValue)
  }

  @Test("Bare words, numbers and strings at the top level are values of their own")
  func scalars() {
    var splitter = JSONStreamSplitter()
    #expect(values(splitter.feed(Array("garbage 42\n\"text\"{}".utf8))) == ["garbage", "42", "\"text\"", "{}"])
    #expect(values(splitter.feed(Array("} ]".utf8))) == ["}", "]"])
  }

  @Test("A value over the size limit, or nested too deep, is reported instead of buffered")
  func limits() {
    var sized = JSONStreamSplitter(maximumValueSize: 100, maximumDepth: 8)
    let pieces = sized.feed(Array(("{\"a\": \"" + String(repeating: "x", count: 200)).utf8))
    #expect(pieces == [.tooLarge])
    #expect(sized.feed(Array("{}".utf8)).isEmpty, "nothing more after the stream broke")
    var deep = JSONStreamSplitter(maximumValueSize: 1000, maximumDepth: 8)
    #expect(deep.feed(Array(String(repeating: "[", count: 9).utf8)) == [.tooLarge])
    var word = JSONStreamSplitter(maximumValueSize: 10, maximumDepth: 8)
    #expect(word.feed(Array(String(repeating: "z", count: 20).utf8)) == [.tooLarge])
  }
}
