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

  @Test("KVM structs are saved without their trailing zeros and padded back; more state than fits is refused")
  func trimmedAndPadded() {
    let area = [UInt8](repeating: 7, count: 832) + [0, 5] + [UInt8](repeating: 0, count: 4096 - 834)
    let saved = Base64Bytes(trimmingTrailingZeros: area)
    #expect(saved.bytes.count == 834)
    #expect(saved.padded(to: 4096) == area)
    #expect(saved.padded(to: 834) == Array(area[..<834]))
    #expect(saved.padded(to: 833) == nil)
    #expect(Base64Bytes(trimmingTrailingZeros: [0, 0, 0]).bytes.isEmpty)
    #expect(Base64Bytes([]).padded(to: 3) == [0, 0, 0])
    // An old, whole-size form (a bigger host's area, zeros at its end) still fits a smaller size.
    #expect(Base64Bytes(area + [UInt8](repeating: 0, count: 6912)).padded(to: 4096) == area)
  }
}
