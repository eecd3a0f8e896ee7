import CZlib

/// gzip compression through the system zlib.
public enum Gzip {
  /// Why compression failed (zlib's return code).
  public struct Failure: Error, CustomStringConvertible {
    public let code: Int32
    public var description: String { "zlib failed with code \(code)" }
  }

  /// `data` as a gzip member (RFC 1952).
  public static func compress(_ data: [UInt8], level: Int32 = 6) throws(Failure) -> [UInt8] {
    var stream = z_stream()
    // windowBits 15 + 16: write a gzip header and trailer instead of a zlib one.
    var status = deflateInit2_(
      &stream, level, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY, ZLIB_VERSION, Int32(MemoryLayout<z_stream>.size))
    guard status == Z_OK else { throw Failure(code: status) }
    defer { deflateEnd(&stream) }
    var output = [UInt8](repeating: 0, count: Int(deflateBound(&stream, UInt(data.count))) + 64)
    var input = data
    status = input.withUnsafeMutableBufferPointer { source in
      output.withUnsafeMutableBufferPointer { target in
        stream.next_in = source.baseAddress
        stream.avail_in = UInt32(source.count)
        stream.next_out = target.baseAddress
        stream.avail_out = UInt32(target.count)
        return deflate(&stream, Z_FINISH)
      }
    }
    guard status == Z_STREAM_END else { throw Failure(code: status) }
    output.removeSubrange(Int(stream.total_out)...)
    return output
  }
}
