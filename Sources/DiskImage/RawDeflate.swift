import CZlib

/// Raw deflate (no zlib or gzip wrapper, 4 KiB window), as qcow2 stores compressed clusters.
enum RawDeflate {
  /// Inflates `input` into exactly `outputSize` bytes; nil if the data is corrupt or too
  /// short. Bytes after the end of the stream (sector padding) are ignored.
  static func decompress(_ input: [UInt8], outputSize: Int) -> [UInt8]? {
    var stream = z_stream()
    guard inflateInit2_(&stream, -12, ZLIB_VERSION, Int32(MemoryLayout<z_stream>.size)) == Z_OK else { return nil }
    defer { inflateEnd(&stream) }
    var output = [UInt8](repeating: 0, count: outputSize)
    _ = run(&stream, input, &output) { inflate(&$0, Z_FINISH) }
    return stream.avail_out == 0 ? output : nil
  }

  /// The compressed bytes, or nil if zlib fails.
  static func compress(_ input: [UInt8], level: Int32 = 6) -> [UInt8]? {
    var stream = z_stream()
    let initialised = deflateInit2_(
      &stream, level, Z_DEFLATED, -12, 9, Z_DEFAULT_STRATEGY, ZLIB_VERSION, Int32(MemoryLayout<z_stream>.size))
    guard initialised == Z_OK else { return nil }
    defer { deflateEnd(&stream) }
    var output = [UInt8](repeating: 0, count: Int(deflateBound(&stream, UInt(input.count))))
    guard run(&stream, input, &output, { deflate(&$0, Z_FINISH) }) == Z_STREAM_END else { return nil }
    return Array(output.prefix(Int(stream.total_out)))
  }

  /// Points `stream` at `input` and `output` and runs `operation` once over them.
  private static func run(
    _ stream: inout z_stream, _ input: [UInt8], _ output: inout [UInt8], _ operation: (inout z_stream) -> Int32
  ) -> Int32 {
    input.withUnsafeBufferPointer { source in
      output.withUnsafeMutableBufferPointer { destination in
        stream.next_in = UnsafeMutablePointer(mutating: source.baseAddress)
        stream.avail_in = UInt32(source.count)
        stream.next_out = destination.baseAddress
        stream.avail_out = UInt32(destination.count)
        return operation(&stream)
      }
    }
  }
}
