import Devices
import DiskImage
import GuestMemory
import KVM
import Machine
import Virtio

/// The machine's PCI side: bus 0 with a host bridge and one virtio-blk function per disk,
/// each BAR placed by the VMM (acting as firmware) in the window the DSDT describes.
///
/// First version: queue kicks are served on the vCPU thread that wrote the notify
/// register, and interrupts are MSI-X messages sent with `KVM_SIGNAL_MSI`.
final class PCIDevices: @unchecked Sendable {
  let bus = PCIBus()
  private(set) var transports: [VirtioPCITransport] = []
  private(set) var disks: [VirtioBlock] = []

  /// Opens every disk (errors name the file, before the guest starts) and attaches it.
  init(disks configurations: [DiskConfiguration], vm: KVMVirtualMachine, memory: GuestMemory)
    throws(VirtualMachineError)
  {
    do { try bus.attach(PCIHostBridge(), device: 0) } catch { throw .disk(path: "", reason: "\(error)") }
    var nextBAR = UInt64(ACPITables.pciMemoryWindow.lowerBound)
    for (index, disk) in configurations.enumerated() {
      let backend: any BlockBackend
      do {
        let format = try disk.format.map { name throws(DiskImageError) -> DiskImageFormat in
          guard let format = DiskImageFormat(rawValue: name) else {
            throw .invalid(path: disk.path, reason: "unknown format '\(name)' (use raw or qcow2)")
          }
          return format
        }
        backend = try DiskImage.open(disk.path, format: format, writable: !disk.readOnly)
      } catch {
        throw .disk(path: disk.path, reason: "\(error)")
      }
      let device = VirtioBlock(backend: backend, memory: memory, serial: "skvm-disk-\(index)")
      let transport = VirtioPCITransport(
        device: device, memory: memory, sink: MSISink(vm: vm), classCode: 0x01_8000)
      device.interrupt = { [weak transport] queue in transport?.signal(queue: queue) }
      do { try bus.attach(transport, device: index + 1) } catch { throw .disk(path: disk.path, reason: "\(error)") }
      // Firmware's job: place BAR 0 and turn on memory decoding and bus mastering.
      transport.configWrite(0x10, width: 4, value: UInt32(truncatingIfNeeded: nextBAR))
      transport.configWrite(0x14, width: 4, value: UInt32(truncatingIfNeeded: nextBAR >> 32))
      transport.configWrite(0x04, width: 2, value: 0x0006)
      nextBAR += VirtioPCITransport.barSize
      transports.append(transport)
      disks.append(device)
    }
  }

  /// Puts the configuration ports and every BAR on the machine's buses.
  func register(ports: IOBus, mmio: IOBus) throws(IOBusError) {
    let conf1 = PCIConfigPorts(bus: bus)
    try ports.register(conf1.addressPort, base: PCIConfigPorts.addressBase, size: 1)
    try ports.register(conf1.dataPort, base: PCIConfigPorts.dataBase, size: 4)
    for transport in transports {
      guard let base = transport.barAddress else { continue }
      try mmio.register(BARWindow(transport: transport), base: base, size: VirtioPCITransport.barSize)
    }
  }
}

/// A virtio-pci BAR 0 on the MMIO bus.
private final class BARWindow: IODevice {
  let name = "virtio-pci-bar0"
  let transport: VirtioPCITransport
  init(transport: VirtioPCITransport) { self.transport = transport }
  func read(offset: UInt64, width: Int) -> UInt64 { transport.barRead(offset, width: width) }
  func write(offset: UInt64, width: Int, value: UInt64) { transport.barWrite(offset, width: width, value: value) }
}

/// MSI-X messages through `KVM_SIGNAL_MSI`; no INTx routing yet (devices use MSI-X).
private struct MSISink: VirtioInterruptSink {
  let vm: KVMVirtualMachine
  func deliverMessage(address: UInt64, data: UInt32) { try? vm.signalMSI(address: address, data: data) }
  func setLine(_ asserted: Bool) {}
}
