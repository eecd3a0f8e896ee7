import FuzzSupport
import ImageVerbs

/// libFuzzer entry: the input is a qcow2 image, run through `ImageVerbs.write`.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzImageWrite(_ data: UnsafePointer<UInt8>, _ size: Int) -> Int32 {
  ImageVerbs.withInput(data, size) { ImageVerbs.write($0) }
  return 0
}

/// The executable's entry point as SwiftPM names it.
@_cdecl("FuzzImageWrite_main")
public func fuzzImageWriteMain(_ argc: Int32, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> Int32 {
  runFuzzer(argc, argv) { data, size in fuzzImageWrite(data, size) }
}
