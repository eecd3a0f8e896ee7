import Glibc

/// printf-style formatting through the C library's `vsnprintf`, for the fixed layouts that
/// mirror QEMU's and qemu-img's output (`%02d`, `%.3g`, …), without Foundation's
/// `String(format:)`. The arguments must match the format, as with printf.
public func cFormat(_ format: String, _ arguments: any CVarArg...) -> String {
  withVaList(arguments) { list in
    var buffer = [CChar](repeating: 0, count: 256)
    let needed = Int(vsnprintf(&buffer, buffer.count, format, list))
    guard needed >= buffer.count else {
      return String(decoding: buffer.prefix(max(0, needed)).map(UInt8.init(bitPattern:)), as: UTF8.self)
    }
    return withVaList(arguments) { again in
      var larger = [CChar](repeating: 0, count: needed + 1)
      _ = vsnprintf(&larger, larger.count, format, again)
      return String(decoding: larger.prefix(needed).map(UInt8.init(bitPattern:)), as: UTF8.self)
    }
  }
}
