import CZlib

/// Raw deflate decompression (no zlib or gzip wrapper), as qcow2 stores compressed clusters.
enum Inflate {
  /// Inflates `input` into exactly `outputSize` bytes; nil if the data is corrupt or too short.
  static func raw(_ input: [UInt8], outputSize: Int) -> [UInt8]? {
    var output = [UInt8](repeating: 0, count: outputSize)
    var stream = z_stream()
    guard inflateInit2_(&stream, -12, ZLIB_VERSION, Int32(MemoryLayout<z_stream>.size)) == Z_OK else { return nil }
    defer { inflateEnd(&stream) }
    let status: Int32 = input.withUnsafeBufferPointer { source in
      output.withUnsafeMutableBufferPointer { destination in
        stream.next_in = UnsafeMutablePointer(mutating: source.baseAddress)
        stream.avail_in = UInt32(source.count)
        stream.next_out = destination.baseAddress
        stream.avail_out = UInt32(destination.count)
        return inflate(&stream, Z_FINISH)
      }
    }
    // Compressed clusters are padded to sectors: trailing bytes after the stream are normal.
    guard status == Z_STREAM_END || (status == Z_BUF_ERROR && stream.avail_out == 0) || stream.avail_out == 0 else {
      return nil
    }
    return stream.avail_out == 0 ? output : nil
  }
}

/// Raw deflate compression, as qcow2 stores compressed clusters.
enum Deflate {
  /// The compressed bytes, or nil if zlib fails.
  static func raw(_ input: [UInt8], level: Int32 = 6) -> [UInt8]? {
    var stream = z_stream()
    guard
      deflateInit2_(
        &stream, level, Z_DEFLATED, -12, 9, Z_DEFAULT_STRATEGY, ZLIB_VERSION, Int32(MemoryLayout<z_stream>.size))
        == Z_OK
    else { return nil }
    defer { deflateEnd(&stream) }
    var output = [UInt8](repeating: 0, count: Int(deflateBound(&stream, UInt(input.count))))
    let status: Int32 = input.withUnsafeBufferPointer { source in
      output.withUnsafeMutableBufferPointer { destination in
        stream.next_in = UnsafeMutablePointer(mutating: source.baseAddress)
        stream.avail_in = UInt32(source.count)
        stream.next_out = destination.baseAddress
        stream.avail_out = UInt32(destination.count)
        return deflate(&stream, Z_FINISH)
      }
    }
    guard status == Z_STREAM_END else { return nil }
    return Array(output.prefix(Int(stream.total_out)))
  }
}
