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
    let disks = shape.disks.map {
      OpenedDisk(configuration: $0, backend: NullDisk(size: 1 << 20, readOnly: $0.readOnly))
    }
    guard let machine = try? VirtualMachine(rehearsing: shape, disks: disks) else { return }
    defer { machine.pci?.stopIOThreads() }
    guard let saved = try? machine.captureState().json() else { return }
    try? MachineState.restoreDevices(saved.devices, into: machine.devices, path: "the rehearsal")
  }
}
