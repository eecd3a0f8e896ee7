import FuzzSupport
import Glibc
import SwiftKVM

/// libFuzzer entry for the control plane's parsers and reports: the first byte picks what the
/// rest feeds — a `--disk` value, a `--net` value, a `--qmp` address, an option list, a size (`--memory`), or
/// a PCI function whose configuration space the guest programmed with these bytes, reported
/// as `query-pci` and `info pci`. Each must end in a value or a typed error, never a trap.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzControl(_ data: UnsafePointer<UInt8>, _ size: Int) -> Int32 {
  guard size > 0 else { return 0 }
  let bytes = UnsafeBufferPointer(start: data + 1, count: size - 1)
  let text = String(decoding: bytes, as: UTF8.self)
  switch data[0] % 6 {
  case 5:
    // A --net value (back end, MAC, hostfwd), and the same text as a MAC address.
    _ = try? NetworkConfiguration(parsing: text)
    _ = MACAddress(text)
  case 0: _ = try? DiskConfiguration(parsing: text)
  case 1: _ = try? MonitorAddress(parsing: text)
  case 2: _ = try? OptionList(parsing: text)
  case 3: _ = try? ByteSize.parse(text)
  default: reportPCI(Array(bytes))
  }
  return 0
}

/// Programs a virtio-like function's configuration space with (offset, width, value) writes
/// taken from `bytes`, then builds both monitor reports of it.
private func reportPCI(_ bytes: [UInt8]) {
  var space = PCIConfigSpace(vendor: 0x1AF4, device: 0x1042, classCode: 0x01_8000, interruptPin: 1)
  space.setBAR(0, .init(kind: .memory64, size: 0x4000))
  space.setBAR(2, .init(kind: .memory32, size: 0x1000, prefetchable: true))
  space.setBAR(4, .init(kind: .io, size: 0x20))
  var index = 0
  while index + 6 <= bytes.count {
    let offset = Int(bytes[index]) | Int(bytes[index + 1] & 0x0F) << 8
    let width = [1, 2, 4][Int(bytes[index + 1] >> 4) % 3]
    let value = (0..<4).reduce(UInt32(0)) { $0 | UInt32(bytes[index + 2 + $1]) << (8 * UInt32($1)) }
    space.write(offset, width: width, value: value)
    index += 6
  }
  let summary = PCIFunctionSummary(slot: Int(bytes.first ?? 1) % 32, space: space)
  _ = PCIReport.qmp([summary])
  _ = PCIReport.human([summary])
}

/// The executable's entry point as SwiftPM names it.
@_cdecl("FuzzControl_main")
public func fuzzControlMain(_ argc: Int32, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> Int32 {
  runFuzzer(argc, argv) { data, size in fuzzControl(data, size) }
}
