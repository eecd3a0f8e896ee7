import CSystemCalls
import Devices
import DiskImage
import Glibc
import GuestMemory
import KVM
import Machine
import Network
import Virtio

/// A disk image opened (and locked) before any KVM object exists, with what it was opened from.
struct OpenedDisk {
  let configuration: DiskConfiguration
  let backend: any BlockBackend

  /// Opens every disk in order; the first that cannot be opened fails them all, naming its file.
  static func openAll(_ disks: [DiskConfiguration]) throws(VirtualMachineError) -> [OpenedDisk] {
    var opened: [OpenedDisk] = []
    for disk in disks {
      do {
        opened.append(OpenedDisk(configuration: disk, backend: try disk.open()))
      } catch {
        for done in opened { done.backend.close() }
        throw .disk(path: disk.path, reason: "\(error)")
      }
    }
    return opened
  }
}

/// The machine's PCI side: bus 0 with a host bridge and one virtio function per device
/// (disks, the CD-ROM drive, then the console, the entropy source and the NICs), configuration space through the
/// 0xCF8/0xCFC ports and ECAM, each BAR placed by the VMM (acting as firmware) in the
/// window the DSDT describes — and followed wherever the guest moves it.
///
/// Every function registers in the machine's `DeviceRegistry` under a stable id
/// (`virtio-blk0`, `virtio-console0`, `virtio-rng0`, …) with its statistics; adding a device
/// is its own file plus one `add` call here.
///
/// Queue kicks reach a per-device I/O thread through ioeventfds (the MMIO exit path stays as
/// the fallback); block requests run on a pool of I/O workers, several at a time; MSI-X
/// vectors are irqfds on KVM GSI routes; INTx is a level on the `_PRT`'s IOAPIC pin.
final class PCIDevices: @unchecked Sendable {
  let bus = PCIBus()
  let configPorts: PCIConfigPorts
  private(set) var transports: [VirtioPCITransport] = []
  private(set) var disks: [VirtioBlock] = []
  /// The CD-ROM drive (virtio-scsi), if the machine has one.
  private(set) var cdrom: VirtioSCSI?
  private(set) var console: VirtioConsole?
  /// The NICs, in `--net` order, with what each is connected to.
  private(set) var networks: [(device: VirtioNet, configuration: NetworkConfiguration)] = []
  /// The kernel data planes of NICs with vhost=on (one per queue pair), by NIC index.
  private var vhosts: [Int: [VhostNet]] = [:]
  /// The log vhost-net writes while a live migration runs (see `logVhostWrites`).
  var vhostLog: VhostDirtyLog?
  /// What did not go as configured but did not stop the machine (vhost-net missing: skvm
  /// serves that tap itself), for the CLI to show.
  private(set) var notices: [String] = []
  private var notifiers: [QueueNotifier] = []
  private var pumps: [NetworkPump] = []
  private let routing: InterruptRouting
  private var lines: [UInt32: SharedInterruptLine] = [:]
  private let workers: IOWorkerPool?
  private let vm: KVMVirtualMachine
  let memory: GuestMemory
  private let registry: DeviceRegistry
  private var nextBAR = UInt64(ACPITables.pciMemoryWindow.lowerBound)

  /// Host threads serving block requests, per disk (QEMU's thread pool has up to 64 in all).
  static let workersPerDisk = 4
  static let maximumWorkers = 16

  /// How many block workers a machine with `disks` disks and `vCPUs` vCPUs gets: up to
  /// `workersPerDisk` per disk, but no more than the CPUs this process may run on that its
  /// vCPUs leave free (at least one per disk). More copying threads than free cores only
  /// time-slice: on a 2-CPU host with one busy vCPU, one worker served the benchmark probe's
  /// 4 KiB reads (32 in flight) 1.7× and its 1 MiB reads 1.13× faster than four.
  static func workerCount(disks: Int, vCPUs: Int, usableCPUs: Int = usableCPUCount()) -> Int {
    min(maximumWorkers, workersPerDisk * disks, max(disks, usableCPUs - vCPUs))
  }

  /// The CPUs in this process's affinity mask (all online ones if it cannot be read).
  static func usableCPUCount() -> Int {
    var mask = [UInt8](repeating: 0, count: 128)
    guard csys_get_affinity(0, &mask, UInt32(mask.count)) == 0 else {
      return max(1, sysconf(Int32(_SC_NPROCESSORS_ONLN)))
    }
    return max(1, mask.reduce(0) { $0 + $1.nonzeroBitCount })
  }

  /// Attaches every (already opened) disk, then the console (with an output), the entropy
  /// device if asked for, and a NIC per (already opened) network back end, registering each.
  init(
    disks configurations: [OpenedDisk], cdrom: OpenedDisk? = nil, console consoleOutput: (any ConsoleOutput)?,
    entropy wantsEntropy: Bool,
    networks: [OpenedNetwork] = [], vCPUs: Int = 1, vm: KVMVirtualMachine, memory: GuestMemory,
    registry: DeviceRegistry
  )
    throws(VirtualMachineError)
  {
    self.vm = vm
    self.memory = memory
    self.registry = registry
    routing = InterruptRouting(vm: vm)
    configPorts = PCIConfigPorts(bus: bus)
    if configurations.isEmpty {
      workers = nil
    } else {
      do {
        workers = try IOWorkerPool(
          count: Self.workerCount(disks: configurations.count, vCPUs: vCPUs), name: "virtio-blk")
      } catch {
        throw .disk(path: configurations[0].configuration.path, reason: "\(error)")
      }
    }
    let bridge = PCIHostBridge()
    do { try bus.attach(bridge, device: 0) } catch { throw .disk(path: "", reason: "\(error)") }
    do {
      try registry.register(bridge, id: "pci-host", kind: "PCI Express host bridge")
      try registry.register(configPorts, id: "pci-config", kind: "PCI configuration ports 0xCF8/0xCFC")
    } catch {
      throw .deviceRegistry(error)
    }
    for (index, disk) in configurations.enumerated() {
      let device = VirtioBlock(backend: disk.backend, memory: memory, serial: "skvm-disk-\(index)", executor: workers)
      disks.append(device)
      let name = "vd\(Character(UnicodeScalar(UInt8(97 + index % 26))))"
      try add(device, id: "virtio-blk\(index)", classCode: 0x01_8000, path: disk.configuration.path) {
        let stats = device.statistics.withLock { $0 }
        return "  \(name): \(stats.reads) reads (\(stats.bytesRead) bytes), "
          + "\(stats.writes) writes (\(stats.bytesWritten) bytes), \(stats.flushes) flushes, \(stats.other) other, "
          + "\(stats.errors) errors"
      }
    }
    if let cdrom {
      let device = VirtioSCSI(backend: cdrom.backend, memory: memory)
      try add(device, id: "virtio-scsi0", classCode: 0x01_0000, path: cdrom.configuration.path) {
        let stats = device.statistics.withLock { $0 }
        return "  cd0: \(stats.commands) commands, \(stats.bytesRead) bytes read, \(stats.failures) failed"
      }
      self.cdrom = device
    }
    if let consoleOutput {
      let device = VirtioConsole(memory: memory, output: consoleOutput)
      let transport = try add(device, id: "virtio-console0", classCode: 0x07_8000, path: "console") {
        "  hvc0: \(device.bytesTransmitted.load(ordering: .relaxed)) bytes out, "
          + "\(device.bytesReceived.load(ordering: .relaxed)) bytes in"
      }
      device.queueBroken = { [weak transport] in transport?.markNeedsReset() }
      console = device
    }
    if wantsEntropy {
      let device = VirtioEntropy(memory: memory)
      try add(device, id: "virtio-rng0", classCode: 0x00_FF00, path: "entropy") {
        "  rng: \(device.bytesServed.load(ordering: .relaxed)) bytes"
      }
    }
    for (index, network) in networks.enumerated() {
      guard let first = network.backends.first else {
        throw .network(index: index, reason: "no back end was opened for it")
      }
      let device = VirtioNet(
        backend: first, additional: Array(network.backends.dropFirst()), macAddress: network.macAddress,
        memory: memory, mtu: network.configuration.mtu)
      if network.configuration.vhost {
        let taps = network.backends.compactMap { $0 as? TapBackend }
        do {
          let planes = try taps.map { tap throws(NetworkError) in try VhostNet(tap: tap, memory: memory) }
          for (pair, plane) in planes.enumerated() { device.setDataPlane(plane, pair: pair) }
          vhosts[index] = planes
        } catch {
          notices.append("network \(index): vhost=on: \(error.description); skvm moves its frames itself")
        }
      }
      let transport = try add(device, id: "virtio-net\(index)", classCode: 0x02_0000, path: "network \(index)") {
        let counts = device.statistics
        let kernel =
          device.dataPlane(pair: 0) != nil ? "; vhost-net moves the frames: the tap's own counters count them" : ""
        let queues =
          device.queuePairCount > 1 ? ", \(device.activeQueuePairs) of \(device.queuePairCount) queue pairs" : ""
        return "  net\(index) (\(device.backend.description)\(queues), \(network.macAddress)): "
          + "\(counts.receivePackets.load(ordering: .relaxed)) packets in "
          + "(\(counts.receiveBytes.load(ordering: .relaxed)) bytes, \(counts.receiveDropped.load(ordering: .relaxed)) dropped, "
          + "\(counts.receiveFiltered.load(ordering: .relaxed)) filtered), "
          + "\(counts.transmitPackets.load(ordering: .relaxed)) packets out "
          + "(\(counts.transmitBytes.load(ordering: .relaxed)) bytes, \(counts.transmitDropped.load(ordering: .relaxed)) dropped)"
          + kernel
      }
      device.queueBroken = { [weak transport] in transport?.markNeedsReset() }
      device.configurationChanged = { [weak transport] in transport?.signalConfigChange() }
      if let planes = vhosts[index] {
        // vhost-net signals each queue's MSI-X irqfd itself while that vector is unmasked.
        transport.observeInterruptRouting { [weak transport] in
          guard let transport else { return }
          for (pair, plane) in planes.enumerated() {
            plane.setCallTargets([
              transport.directInterrupt(queue: 2 * pair), transport.directInterrupt(queue: 2 * pair + 1),
            ])
          }
        }
      }
      self.networks.append((device, network.configuration))
    }
  }

  /// The slot of disk `index` (disks come first, from slot 1: /dev/vda is 00:01.0).
  static func diskSlot(_ index: Int) -> Int { 1 + index }

  /// The CD-ROM drive's slot: right after the disks.
  static func cdromSlot(diskCount: Int) -> Int { 1 + diskCount }

  /// Puts `device` behind a transport in the next free slot and registers it as `id`.
  @discardableResult
  private func add(
    _ device: any VirtioDevice, id: String, classCode: UInt32, path: String,
    statistics: @escaping @Sendable () -> String?
  ) throws(VirtualMachineError) -> VirtioPCITransport {
    let slot = transports.count + 1
    let transport = makeTransport(device, slot: slot, classCode: classCode)
    do {
      try plug(transport, slot: slot)
      try registry.register(transport, id: id, kind: "virtio-pci (type \(device.deviceType))", statistics: statistics)
    } catch {
      throw .disk(path: path, reason: "\(error)")
    }
    return transport
  }

  private func makeTransport(_ device: any VirtioDevice, slot: Int, classCode: UInt32) -> VirtioPCITransport {
    let gsi = ACPITables.pciInterruptGSI(slot: slot, pin: 0)
    let line = lines[gsi] ?? SharedInterruptLine(vm: vm, gsi: gsi)
    lines[gsi] = line
    let sink = KVMVirtioInterrupts(
      vm: vm, routing: routing, vectorCount: device.queueSizes.count + 1, line: line.source(slot))
    return VirtioPCITransport(device: device, memory: memory, sink: sink, classCode: classCode)
  }

  /// Attaches `transport` and does firmware's job: places BAR 0, records the INTx pin's
  /// GSI in the interrupt line register, turns on memory decoding and bus mastering.
  private func plug(_ transport: VirtioPCITransport, slot: Int) throws(PCIBusError) {
    try bus.attach(transport, device: slot)
    transport.configWrite(0x3C, width: 1, value: ACPITables.pciInterruptGSI(slot: slot, pin: 0))
    transport.configWrite(0x10, width: 4, value: UInt32(truncatingIfNeeded: nextBAR))
    transport.configWrite(0x14, width: 4, value: UInt32(truncatingIfNeeded: nextBAR >> 32))
    transport.configWrite(0x04, width: 2, value: 0x0006)
    nextBAR += VirtioPCITransport.barSize
    transports.append(transport)
  }

  /// Closes every disk image (releasing its lock) and network back end once the machine has stopped.
  func closeDisks() {
    for disk in disks { disk.backend.close() }
    cdrom?.backend.close()
    for network in networks { for backend in network.device.backends { backend.close() } }
  }

  /// Every function on bus 0, as the guest sees it now.
  var functionSummaries: [PCIFunctionSummary] {
    bus.attached.map { slot, function in PCIFunctionSummary(slot: slot, space: function.configSpace) }
  }

  /// Starts one I/O thread per device, fed by ioeventfds on the notify registers.
  func startIOThreads() {
    for (index, transport) in transports.enumerated() {
      // A vhost NIC's receive and transmit kicks are the kernel's to read.
      var external: [Int: EventFD] = [:]
      if let net = transport.device as? VirtioNet {
        for pair in 0..<net.queuePairCount {
          guard let vhost = net.dataPlane(pair: pair) as? VhostNet else { continue }
          external[2 * pair] = vhost.kicks[0]
          external[2 * pair + 1] = vhost.kicks[1]
        }
      }
      if let notifier = QueueNotifier(transport: transport, vm: vm, name: "virtio-io\(index)", external: external) {
        notifiers.append(notifier)
      }
    }
    for (index, network) in networks.enumerated() {
      for pair in 0..<network.device.queuePairCount {
        let name = network.device.queuePairCount > 1 ? "net-rx\(index).\(pair)" : "net-rx\(index)"
        if let pump = NetworkPump(device: network.device, pair: pair, name: name, vhost: vhosts[index]?[pair]) {
          pumps.append(pump)
        }
      }
    }
  }

  deinit { stopIOThreads() }

  /// Every vhost-net data plane with its NIC's index.
  var vhostPlanes: [(nic: Int, plane: VhostNet)] {
    vhosts.sorted { $0.key < $1.key }.flatMap { nic, planes in planes.map { (nic, $0) } }
  }

  /// Stops the I/O threads, letting requests in flight finish.
  func stopIOThreads() {
    for notifier in notifiers { notifier.stop() }
    notifiers = []
    for pump in pumps { pump.stop() }
    pumps = []
    for vhost in vhosts.values.joined() { vhost.stop() }
    workers?.stop()
  }

  /// Holds every I/O thread at a request boundary and waits for the block requests in flight
  /// to complete: nothing touches guest memory or the devices' rings until `resume`.
  func quiesce() {
    for notifier in notifiers { notifier.pause() }
    // The kernel lets go of the rings first (it finishes what it was doing), then the pumps
    // relay its last interrupts and park.
    for vhost in vhosts.values.joined() { vhost.suspend() }
    for pump in pumps { pump.pause() }
    workers?.waitUntilIdle()
  }

  /// Lets the I/O threads serve kicks again (those that arrived meanwhile are served first).
  func resume() {
    for notifier in notifiers { notifier.resume() }
    for vhost in vhosts.values.joined() { vhost.resume() }
    for pump in pumps { pump.resume() }
  }

  /// Puts the configuration ports, ECAM and the memory window on the machine's buses.
  func register(ports: IOBus, mmio: IOBus) throws(IOBusError) {
    try ports.register(configPorts.addressPort, base: PCIConfigPorts.addressBase, size: 1)
    try ports.register(configPorts.dataPort, base: PCIConfigPorts.dataBase, size: 4)
    try mmio.register(PCIExpressECAM(bus: bus), base: X86MemoryMap.pciExpressECAM, size: PCIExpressECAM.size)
    let window = ACPITables.pciMemoryWindow
    try mmio.register(
      PCIMemoryWindow(transports: transports, base: UInt64(window.lowerBound)), base: UInt64(window.lowerBound),
      size: UInt64(window.upperBound - window.lowerBound) + 1)
  }
}

/// The PCI memory window on the MMIO bus: an access goes to whichever function's BAR 0
/// decodes it now, so BARs the guest moves are followed with no re-registration.
private final class PCIMemoryWindow: IODevice {
  let name = "pci-memory-window"
  let transports: [VirtioPCITransport]
  let base: UInt64
  init(transports: [VirtioPCITransport], base: UInt64) {
    self.transports = transports
    self.base = base
  }

  func read(offset: UInt64, width: Int) -> UInt64 {
    for transport in transports {
      if let inside = transport.barOffset(of: base + offset) { return transport.barRead(inside, width: width) }
    }
    return .allOnes(width: width)
  }

  func write(offset: UInt64, width: Int, value: UInt64) {
    for transport in transports {
      if let inside = transport.barOffset(of: base + offset) {
        transport.barWrite(inside, width: width, value: value)
        return
      }
    }
  }
}
