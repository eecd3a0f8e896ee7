import FuzzSupport
import ImageVerbs

/// libFuzzer entry: the input is a qcow2 image, run through `ImageVerbs.read`.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzImageRead(_ data: UnsafePointer<UInt8>, _ size: Int) -> Int32 {
  ImageVerbs.withInput(data, size) { ImageVerbs.read($0) }
  return 0
}

/// The executable's entry point as SwiftPM names it.
@_cdecl("FuzzImageRead_main")
public func fuzzImageReadMain(_ argc: Int32, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> Int32 {
  runFuzzer(argc, argv) { data, size in fuzzImageRead(data, size) }
}
