import Devices
import DiskImage

extension VirtualMachine {
  /// A migration destination's rehearsal, while RAM streams in: builds a scratch machine of
  /// the incoming one's shape (its disks in memory, no NICs: their back ends are the source's
  /// until the switch-over), saves its devices' state and restores it into itself, then throws
  /// it away. The real build and restore in the guest's pause then find the Swift runtime's
  /// type metadata and conformances already resolved (cold, they were half of the devices'
  /// restore). Anything that fails just leaves the caches as they were.
  static func rehearse(_ configuration: VirtualMachineConfiguration) {
    var shape = configuration
    shape.networks = []
    shape.debugConsolePath = nil
    let disks = shape.disks.map { OpenedDisk(configuration: $0, backend: ScratchDisk(readOnly: $0.readOnly)) }
    guard let machine = try? VirtualMachine(rehearsing: shape, disks: disks) else { return }
    defer { machine.pci?.stopIOThreads() }
    guard let saved = try? machine.captureState().json() else { return }
    try? MachineState.restoreDevices(saved.devices, into: machine.devices, path: "the rehearsal")
  }
}

/// A disk of zeros in no storage at all: the rehearsal's stand-in for a real image.
private final class ScratchDisk: BlockBackend, @unchecked Sendable {
  let size: UInt64 = 1 << 20
  let isReadOnly: Bool

  init(readOnly: Bool) { isReadOnly = readOnly }

  func read(into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64) throws(DiskImageError) {
    buffer.initializeMemory(as: UInt8.self, repeating: 0)
  }
  func write(_ bytes: UnsafeRawBufferPointer, at offset: UInt64) throws(DiskImageError) {}
  func flush() throws(DiskImageError) {}
  func writeZeroes(at offset: UInt64, length: UInt64) throws(DiskImageError) {}
  func discard(at offset: UInt64, length: UInt64) throws(DiskImageError) {}
  func close() {}
}
