import DomainXML
import FuzzSupport
import Glibc

/// libFuzzer entry for what the management daemon reads from its clients: the first byte picks
/// what the rest feeds — a domain XML document (anything it accepts must format to XML that
/// reads back to the same definition, and format the same again), a CPU list, a domain name, a
/// UUID. Each must end in a value or a typed error, never a trap, a hang or an entity expanded.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzDomainXML(_ data: UnsafePointer<UInt8>, _ size: Int) -> Int32 {
  guard size > 0 else { return 0 }
  let bytes = Array(UnsafeBufferPointer(start: data + 1, count: size - 1))
  switch data[0] % 4 {
  case 0:
    _ = CPUSet.parse(String(decoding: bytes, as: UTF8.self), limit: 4096).map(CPUSet.format)
  case 1:
    _ = DomainName.problem(String(decoding: bytes, as: UTF8.self))
  case 2:
    _ = DomainName.uuid(String(decoding: bytes, as: UTF8.self))
  default:
    guard let parsed = try? DomainXML.parse(bytes) else { return 0 }
    let text = DomainXML.format(parsed.definition)
    guard let again = try? DomainXML.parse(text) else {
      fatalError("a definition it accepted formats to XML it refuses:\n\(text)")
    }
    if DomainXML.format(again.definition) != text {
      fatalError("format is not a fixed point:\n\(text)\n---\n\(DomainXML.format(again.definition))")
    }
  }
  return 0
}

@_cdecl("FuzzDomainXML_main")
public func fuzzDomainXMLMain(_ argc: Int32, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> Int32 {
  runFuzzer(argc, argv) { data, size in fuzzDomainXML(data, size) }
}
