import Checked
import Foundation
import VMM

/// The monitor's reports of PCI bus 0: QMP `query-pci` (QEMU's `PciInfo` shape) and HMP
/// `info pci` (QEMU's text). Every value comes from configuration space the guest programs,
/// so none is trusted to fit anything narrower than it is, or to add up without overflow.
public enum PCIReport {
  /// `query-pci`'s answer for these functions. Every value comes from configuration space the
  /// guest programs, so none is trusted to fit anything narrower than it is.
  public static func qmp(_ functions: [PCIFunctionSummary]) -> [[String: Any]] {
    guard !functions.isEmpty else { return [] }
    let devices: [[String: Any]] = functions.map { function in
      var device: [String: Any] = [
        "bus": 0, "slot": function.slot, "function": 0,
        "class_info": ["class": Int(function.classCode), "desc": function.classDescription],
        "id": [
          "vendor": Int(function.vendor), "device": Int(function.device),
          "subsystem-vendor": Int(function.subsystemVendor), "subsystem": Int(function.subsystem),
        ],
        "qdev_id": "",
        "regions": function.regions.map { region -> [String: Any] in
          [
            // Guest-programmed: any 64-bit value (QEMU's QAPI prints BAR addresses as unsigned).
            "bar": region.bar, "type": "memory", "address": NSNumber(value: region.address),
            "size": NSNumber(value: region.size),
            "prefetch": region.prefetchable, "mem_type_64": region.is64Bit,
          ]
        },
      ]
      if function.interruptPin != 0 {
        device["irq_pin"] = Int(function.interruptPin)
        device["irq"] = Int(function.interruptLine)
      }
      return device
    }
    return [["bus": 0, "devices": devices]]
  }

  /// `info pci`'s text for these functions (guest-programmed values, none trusted).
  public static func human(_ functions: [PCIFunctionSummary]) -> String {
    func hex(_ value: some BinaryInteger, _ width: Int) -> String {
      let digits = String(value, radix: 16)
      return String(repeating: "0", count: max(0, width - digits.count)) + digits
    }
    var lines: [String] = []
    for function in functions {
      lines.append(
        "  Bus  0, device \(String(repeating: " ", count: function.slot < 10 ? 2 : 1))\(function.slot), function 0:")
      lines.append("    \(function.classDescription): PCI device \(hex(function.vendor, 4)):\(hex(function.device, 4))")
      lines.append("      PCI subsystem \(hex(function.subsystemVendor, 4)):\(hex(function.subsystem, 4))")
      if function.interruptPin != 0 {
        let pin = Character(UnicodeScalar(UInt8(64) + function.interruptPin))
        lines.append("      IRQ \(function.interruptLine), pin \(pin)")
      }
      for region in function.regions {
        lines.append(
          "      BAR\(region.bar): \(region.is64Bit ? "64" : "32") bit \(region.prefetchable ? "prefetchable " : "")memory at "
            + "0x\(hex(region.address, 8)) [0x\(hex(region.address.lastByte(ofRegionOfSize: region.size) ?? .max, 8))]."
        )
      }
      lines.append("      id \"\"")
    }
    return lines.map { $0 + "\r\n" }.joined()
  }
}
