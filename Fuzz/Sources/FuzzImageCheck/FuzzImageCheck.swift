import FuzzSupport
import ImageVerbs

/// libFuzzer entry: the input is a qcow2 image, run through `ImageVerbs.check`.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzImageCheck(_ data: UnsafePointer<UInt8>, _ size: Int) -> Int32 {
  ImageVerbs.withInput(data, size) { ImageVerbs.check($0) }
  return 0
}

/// The executable's entry point as SwiftPM names it.
@_cdecl("FuzzImageCheck_main")
public func fuzzImageCheckMain(_ argc: Int32, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> Int32 {
  runFuzzer(argc, argv) { data, size in fuzzImageCheck(data, size) }
}
