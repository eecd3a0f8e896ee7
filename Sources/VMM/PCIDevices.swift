import Devices
import DiskImage
import GuestMemory
import KVM
import Machine
import Virtio

/// The machine's PCI side: bus 0 with a host bridge and one virtio-blk function per disk,
/// each BAR placed by the VMM (acting as firmware) in the window the DSDT describes.
///
/// Queue kicks reach a per-device I/O thread through ioeventfds (the MMIO exit path stays as
/// the fallback); interrupts are MSI-X messages sent with `KVM_SIGNAL_MSI`.
final class PCIDevices: @unchecked Sendable {
  let bus = PCIBus()
  private(set) var transports: [VirtioPCITransport] = []
  private(set) var disks: [VirtioBlock] = []

  private(set) var entropy: VirtioEntropy?
  private var notifiers: [QueueNotifier] = []

  /// Opens every disk (errors name the file, before the guest starts) and attaches it, then
  /// the entropy device if asked for.
  init(
    disks configurations: [DiskConfiguration], entropy wantsEntropy: Bool, vm: KVMVirtualMachine, memory: GuestMemory
  )
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
      do { try plug(transport, slot: index + 1, bar: &nextBAR) } catch {
        throw .disk(path: disk.path, reason: "\(error)")
      }
      disks.append(device)
    }
    if wantsEntropy {
      let device = VirtioEntropy(memory: memory)
      let transport = VirtioPCITransport(device: device, memory: memory, sink: MSISink(vm: vm), classCode: 0x00_FF00)
      device.interrupt = { [weak transport] queue in transport?.signal(queue: queue) }
      do { try plug(transport, slot: configurations.count + 1, bar: &nextBAR) } catch {
        throw .disk(path: "entropy", reason: "\(error)")
      }
      entropy = device
    }
  }

  /// Attaches `transport` and does firmware's job: places BAR 0, turns on memory decoding and bus mastering.
  private func plug(_ transport: VirtioPCITransport, slot: Int, bar: inout UInt64) throws(PCIBusError) {
    try bus.attach(transport, device: slot)
    transport.configWrite(0x10, width: 4, value: UInt32(truncatingIfNeeded: bar))
    transport.configWrite(0x14, width: 4, value: UInt32(truncatingIfNeeded: bar >> 32))
    transport.configWrite(0x04, width: 2, value: 0x0006)
    bar += VirtioPCITransport.barSize
    transports.append(transport)
  }

  /// Closes every disk image (releasing its lock) once the machine has stopped.
  func closeDisks() {
    for disk in disks { disk.backend.close() }
  }

  /// One line per device for `--stats`.
  var statisticsLines: [String] {
    var lines = disks.enumerated().map { index, disk in
      let stats = disk.statistics.withLock { $0 }
      return
        "  vd\(Character(UnicodeScalar(UInt8(97 + index % 26)))): \(stats.reads) reads (\(stats.bytesRead) bytes), "
        + "\(stats.writes) writes (\(stats.bytesWritten) bytes), \(stats.flushes) flushes, \(stats.other) other, "
        + "\(stats.errors) errors"
    }
    if let entropy { lines.append("  rng: \(entropy.bytesServed.load(ordering: .relaxed)) bytes") }
    return lines
  }

  /// Starts one I/O thread per device, fed by ioeventfds on the notify registers.
  func startIOThreads(vm: KVMVirtualMachine) {
    for (index, transport) in transports.enumerated() {
      if let notifier = QueueNotifier(transport: transport, vm: vm, name: "virtio-io\(index)") {
        notifiers.append(notifier)
      }
    }
  }

  /// Stops the I/O threads.
  func stopIOThreads() {
    for notifier in notifiers { notifier.stop() }
    notifiers = []
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
