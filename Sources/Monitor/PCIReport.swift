import Checked
import JSON
import VMM

/// The monitor's reports of PCI bus 0: QMP `query-pci` (QEMU's `PciInfo` shape) and HMP
/// `info pci` (QEMU's text). Every value comes from configuration space the guest programs,
/// so none is trusted to fit anything narrower than it is, or to add up without overflow.
public enum PCIReport {
  /// `query-pci`'s answer for these functions. Every value comes from configuration space the
  /// guest programs, so none is trusted to fit anything narrower than it is.
  public static func qmp(_ functions: [PCIFunctionSummary]) -> JSONValue {
    guard !functions.isEmpty else { return [] }
    let devices: [JSONValue] = functions.map { function in
      var device: [String: JSONValue] = [
        "bus": 0, "slot": .number(function.slot), "function": 0,
        "class_info": ["class": .number(function.classCode), "desc": .string(function.classDescription)],
        "id": [
          "vendor": .number(function.vendor), "device": .number(function.device),
          "subsystem-vendor": .number(function.subsystemVendor), "subsystem": .number(function.subsystem),
        ],
        "qdev_id": "",
        "regions": .array(
          function.regions.map { region in
            [
              // Guest-programmed: any 64-bit value (QEMU's QAPI prints BAR addresses as unsigned).
              "bar": .number(region.bar), "type": "memory", "address": .number(region.address),
              "size": .number(region.size), "prefetch": .bool(region.prefetchable),
              "mem_type_64": .bool(region.is64Bit),
            ]
          }),
      ]
      if function.interruptPin != 0 {
        device["irq_pin"] = .number(function.interruptPin)
        device["irq"] = .number(function.interruptLine)
      }
      return .object(device)
    }
    return [["bus": 0, "devices": .array(devices)]]
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
