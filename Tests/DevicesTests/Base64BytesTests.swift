import Foundation
import Testing

@testable import Devices

/// Saved states carry raw bytes as base64: the codec must agree with Foundation's both ways
/// and refuse anything that is not strict base64 (a state stream is untrusted).
@Suite("Base64 state bytes")
struct Base64BytesTests {
  @Test("Every length from 0 to 300 round-trips and matches Foundation's encoding")
  func roundTrip() {
    var generator = SystemRandomNumberGenerator()
    for length in 0...300 {
      let bytes = (0..<length).map { _ in UInt8.random(in: 0...255, using: &generator) }
      let text = Base64Bytes.encode(bytes)
      #expect(text == Data(bytes).base64EncodedString(), "length \(length)")
      #expect(Base64Bytes.decode(text) == bytes, "length \(length)")
    }
  }

  @Test(
    "Non-canonical text is refused",
    arguments: ["A", "AB", "ABC", "A===", "====", "AB=C", "AB==ABCD", "AB C", "ABC\n", "ABCD=", "AB*D", "éABC"])
  func refused(text: String) {
    #expect(Base64Bytes.decode(text) == nil, "\(text)")
  }

  @Test("Decoding goes through Codable with its error")
  func codable() throws {
    let encoded = try JSONEncoder().encode(Base64Bytes([1, 2, 3, 250]))
    #expect(String(decoding: encoded, as: UTF8.self) == "\"AQID+g==\"")
    #expect(try JSONDecoder().decode(Base64Bytes.self, from: encoded).bytes == [1, 2, 3, 250])
    #expect(throws: DecodingError.self) { try JSONDecoder().decode(Base64Bytes.self, from: Data("\"AQ=D\"".utf8)) }
  }
}
