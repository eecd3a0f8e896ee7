import DiskImage
import FuzzSupport
import Glibc

/// libFuzzer entry: the input is an image file. Opening it as qcow2, reading it, mapping it,
/// checking it and writing to it must end in data or a `DiskImageError` — never a crash,
/// a hang, or memory beyond bounds.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzImage(_ data: UnsafePointer<UInt8>, _ size: Int) -> Int32 {
  let path = "/tmp/skvm-fuzz-\(getpid()).qcow2"
  let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0o600)
  guard fd >= 0 else { return 0 }
  _ = write(fd, data, size)
  close(fd)
  defer { unlink(path) }
  guard let image = try? DiskImage.open(path, format: .qcow2, writable: true) else { return 0 }
  var buffer = [UInt8](repeating: 0, count: 65536)
  let limit = min(image.size, 8 << 20)
  var offset: UInt64 = 0
  while offset < limit {
    let count = Int(min(UInt64(buffer.count), limit - offset))
    buffer.withUnsafeMutableBytes { bytes in
      _ = try? image.read(into: UnsafeMutableRawBufferPointer(rebasing: bytes[0..<count]), at: offset)
    }
    offset += UInt64(count)
  }
  if let qcow2 = image as? QCow2Image {
    _ = try? qcow2.check()
    if image.size >= 4096 { _ = try? image.write([UInt8](repeating: 0x5A, count: 4096), at: 0) }
  }
  return 0
}

/// The executable's entry point as SwiftPM names it.
@_cdecl("FuzzImage_main")
public func fuzzImageMain(_ argc: Int32, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> Int32 {
  runFuzzer(argc, argv) { data, size in fuzzImage(data, size) }
}
