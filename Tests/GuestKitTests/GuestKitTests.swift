import Testing

@testable import GuestKit

@Suite("Guest kit")
struct GuestKitTests {
  @Test("cpio newc entries have the right header, name and 4-byte padding")
  func cpioLayout() {
    var archive = CPIOArchive()
    archive.addFile("init", content: Array("#!/bin/sh\n".utf8), mode: 0o755)
    let bytes = archive.finished()
    #expect(bytes.starts(with: Array("070701".utf8)))
    let header = String(decoding: bytes[0..<110], as: UTF8.self)
    #expect(header.dropFirst(14).prefix(8) == "000081ed", "mode: regular file 0755")
    #expect(header.dropFirst(54).prefix(8) == "0000000a", "file size")
    #expect(header.dropFirst(94).prefix(8) == "00000005", "name size with NUL")
    #expect(Array(bytes[110..<115]) == Array("init\0".utf8))
    #expect(bytes[115] == 0, "header + name (115 bytes) padded to 116")
    #expect(Array(bytes[116..<126]) == Array("#!/bin/sh\n".utf8))
    #expect(bytes.count % 512 == 0)
    #expect(String(decoding: bytes, as: UTF8.self).contains("TRAILER!!!"))
  }

  @Test("gzip output has the gzip header and the CRC/size trailer")
  func gzipFormat() throws {
    let data = Array(repeating: Array("skvm ".utf8), count: 1000).flatMap { $0 }
    let compressed = try Gzip.compress(data)
    #expect(compressed.starts(with: [0x1F, 0x8B, 0x08]))
    #expect(compressed.count < data.count / 10)
    let size = compressed.suffix(4).reversed().reduce(0) { $0 << 8 | UInt32($1) }
    #expect(size == UInt32(data.count))
  }

  @Test("The kit's cache follows XDG_CACHE_HOME")
  func cacheRoot() {
    #expect(GuestKit.cacheRoot.hasSuffix("/skvm/kit"))
  }
}
