import Devices
import Foundation
import JSON
import Testing
import VMM

@testable import Monitor

/// The monitor's PCI reports read configuration space the guest programs: a BAR with its top
/// bit set, or all ones (what every OS writes while sizing it), must be reported, not trapped on.
@Suite("PCI reports of hostile BARs")
struct HostilePCIReportTests {
  static func function(bar low: UInt32, high: UInt32) -> PCIFunctionSummary {
    var space = PCIConfigSpace(vendor: 0x1AF4, device: 0x1042, classCode: 0x01_8000, interruptPin: 1)
    space.setBAR(0, .init(kind: .memory64, size: 0x4000))
    space.write(0x10, width: 4, value: low)
    space.write(0x14, width: 4, value: high)
    space.write(0x04, width: 2, value: 0x0006)
    return PCIFunctionSummary(slot: 1, space: space)
  }

  @Test(
    "BAR 0 at 2^63, all ones, and the last 16 KiB below 2^64: query-pci and info pci report them",
    arguments: [(UInt32(0), UInt32(0x8000_0000)), (UInt32.max, UInt32.max), (UInt32(0xFFFF_C000), UInt32.max)])
  func hostileBAR(low: UInt32, high: UInt32) throws {
    let summary = Self.function(bar: low, high: high)
    let address = try #require(summary.regions.first?.address)
    let info = PCIReport.qmp([summary])
    #expect(
      info[0]?["devices"]?[0]?["regions"]?[0]?["address"] == .number(address), "query-pci carries the address as given")
    let json = String(decoding: info.compactText, as: UTF8.self)
    #expect(json.contains("\"address\":\(address)"), "as an unsigned number: \(json)")
    let text = PCIReport.human([summary])
    #expect(text.contains("memory at 0x\(String(address, radix: 16))"), "\(text)")
  }
}
