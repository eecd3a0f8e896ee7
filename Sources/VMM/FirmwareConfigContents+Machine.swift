import Devices
import Machine

extension FirmwareConfigContents {
  /// What QEMU's PC machine hands its firmware through fw_cfg, for a machine of `cpuCount`
  /// vCPUs with RAM at `ranges`: RAM size and CPU counts under their legacy keys, and the RAM
  /// map as `etc/e820` (20-byte entries: address, length, type 1, little-endian).
  static func machine(cpuCount: Int, ranges: [(guestAddress: UInt64, size: UInt64)]) -> FirmwareConfigContents {
    var contents = FirmwareConfigContents()
    let total = ranges.reduce(0) { $0 + $1.size }
    // Legacy keys and one fixed, short file name: none of these can be refused.
    try? contents.set(Key.ramSize, littleEndian(total))
    try? contents.set(Key.cpuCount, littleEndian(UInt16(clamping: cpuCount)))
    try? contents.set(Key.maximumCPUs, littleEndian(UInt16(clamping: cpuCount)))
    var e820: [UInt8] = []
    for range in ranges {
      e820 +=
        littleEndian(range.guestAddress) + littleEndian(range.size)
        + littleEndian(E820Map.Entry.Kind.ram.rawValue)
    }
    try? contents.addFile("etc/e820", e820)
    return contents
  }
}
