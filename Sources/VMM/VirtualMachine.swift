import CKVM
import Devices
import Glibc
import GuestMemory
import KVM
import Machine
import Synchronization

/// A virtual machine built from a `VirtualMachineConfiguration`: guest RAM, vCPUs,
/// the platform devices, and the threads that run it.
///
/// ```swift
/// let vm = try VirtualMachine(configuration: .init(boot: .flat(path: "hello.bin", entry: .real)))
/// let exit = try vm.run()   // blocks until the guest resets, powers off or faults
/// ```
///
/// Everything that can be checked is checked before a VM is created, so a bad
/// configuration fails with a clear error and no VM is ever half-built.
public final class VirtualMachine: MachineControl, @unchecked Sendable {
  /// The configuration this machine was built from.
  public let configuration: VirtualMachineConfiguration
  /// What kind of KVM the host runs.
  public let hostKind: HostKVMKind
  /// The host's KVM.
  public let kvm: KVMSystem
  /// The KVM virtual machine.
  public let vm: KVMVirtualMachine
  /// Guest RAM.
  public let memory: GuestMemory
  /// The port I/O address space.
  public let portBus = IOBus(kind: .port)
  /// The MMIO address space.
  public let mmioBus = IOBus(kind: .mmio)
  /// COM1.
  public let serial: SerialPort
  /// The ACPI PM1 registers (soft-off, the power button).
  public private(set) var powerManagement: ACPIPowerManagement?
  /// Every device, under its stable id: what snapshots save, statistics and summaries list.
  public let devices = DeviceRegistry()
  /// PCI bus 0 with its host bridge and virtio devices (set once the machine is built).
  var pci: PCIDevices?

  let vcpus: [KVMVCPU]
  /// The BIOS image of a firmware boot, mapped below 4 GiB for the machine's life.
  let firmware: FirmwareROM?
  /// Port 0x402's log file (`--debugcon`), if one was asked for.
  private let debugConsole: DebugConsolePort?
  private var workers: [VCPUWorker] = []
  private let gate = RunGate()
  private let pauseLock = Mutex<Bool>(false)
  private let started = Atomic<Bool>(false)
  private let outcome = Mutex<VirtualMachineExit?>(nil)
  private let stopped = OneShotEvent()
  private let threads = Mutex<[OSThread]>([])

  /// Builds the machine. Nothing runs until `run()`.
  public convenience init(
    configuration: VirtualMachineConfiguration, console: any ConsoleOutput = FileDescriptorConsoleOutput(),
    kvmPath: String = "/dev/kvm"
  ) throws(VirtualMachineError) {
    try self.init(configuration: configuration, console: console, kvmPath: kvmPath, restoring: nil)
  }

  /// Builds the machine a snapshot file holds, ready to continue where it was saved. The
  /// configuration must match the saved one in RAM, vCPUs and devices (disk images are
  /// opened again by path, so they must be as they were when it was saved); in `.mapped`
  /// mode the file's RAM is mapped copy-on-write and must stay while the machine runs.
  public convenience init(
    restoring snapshot: SnapshotFile, configuration: VirtualMachineConfiguration,
    console: any ConsoleOutput = FileDescriptorConsoleOutput(), kvmPath: String = "/dev/kvm",
    mode: RestoreMode = .mapped, prepared: IncomingMachineParts? = nil
  ) throws(VirtualMachineError) {
    try self.init(
      configuration: configuration, console: console, kvmPath: kvmPath, restoring: (snapshot, mode),
      prepared: prepared.map { ($0.disks, nil, $0.core) })
  }

  /// Builds the machine an internal snapshot holds (`--loadvm`), on disks already opened and
  /// reverted to it, its RAM backed as `backing` says (mapped from the image, or the copy in
  /// `snapshot`'s memfd when nil).
  convenience init(
    restoring snapshot: SnapshotFile, configuration: VirtualMachineConfiguration, console: any ConsoleOutput,
    kvmPath: String, disks: [OpenedDisk], backing: GuestMemory.Backing?
  ) throws(VirtualMachineError) {
    try self.init(
      configuration: configuration, console: console, kvmPath: kvmPath, restoring: (snapshot, .mapped),
      prepared: (disks, backing, nil))
  }

  /// Builds a machine of `configuration`'s shape on `disks` that boots nothing (its RAM stays
  /// as it is): a migration destination's rehearsal (see `rehearse`).
  convenience init(rehearsing configuration: VirtualMachineConfiguration, disks: [OpenedDisk])
    throws(VirtualMachineError)
  {
    try self.init(
      configuration: configuration, console: DiscardedConsoleOutput(), kvmPath: "/dev/kvm", restoring: nil,
      prepared: (disks, nil, nil), boots: false)
  }

  private init(
    configuration: VirtualMachineConfiguration, console: any ConsoleOutput, kvmPath: String,
    restoring: (snapshot: SnapshotFile, mode: RestoreMode)?,
    prepared: (disks: [OpenedDisk]?, backing: GuestMemory.Backing?, core: MachineCore?)? = nil, boots: Bool = true
  ) throws(VirtualMachineError) {
    self.configuration = configuration
    let trace = StartupTrace.shared
    try ConfigurationCheck.memorySize(configuration.memorySize)
    if configuration.cpuCount < 1 {
      throw .invalidCPUCount(configuration.cpuCount, maximum: ConfigurationCheck.cpuLimit)
    }
    let ranges = X86MemoryMap.ramRanges(size: configuration.memorySize)
    var payload: BootPayload?
    var backing = GuestMemory.Backing.anonymous
    if let restoring {
      try SnapshotCompatibility.check(
        saved: restoring.snapshot.record.configuration, requested: configuration, path: restoring.snapshot.path)
      let offsets = try restoring.snapshot.offsets(matching: ranges)
      if let mapped = prepared?.backing {
        backing = mapped
      } else {
        backing =
          restoring.mode == .mapped
          ? .file(fd: restoring.snapshot.fd, offsets: offsets) : .fileCopy(fd: restoring.snapshot.fd, offsets: offsets)
      }
    } else if boots {
      payload = try ConfigurationCheck.bootPayload(configuration.boot, ramBelowHole: ranges[0].size)
    }
    let firmware = try ConfigurationCheck.firmware(configuration.boot)
    self.firmware = firmware
    debugConsole = try configuration.debugConsolePath.map(Self.openDebugConsole)
    // Disk images are opened (and locked) before /dev/kvm is touched: a missing or busy image
    // fails here, with no VM half-built.
    let disks: [OpenedDisk]
    if let opened = prepared?.disks, opened.map(\.configuration) == configuration.disks {
      disks = opened
    } else {
      for disk in prepared?.disks ?? [] { disk.backend.close() }
      disks = try OpenedDisk.openAll(configuration.disks)
    }
    var cdrom: OpenedDisk?
    if let drive = configuration.cdrom {
      do throws(VirtualMachineError) { cdrom = try OpenedDisk.openAll([drive]).first } catch {
        for disk in disks { disk.backend.close() }
        guard case .disk(let path, let reason) = error else { throw error }
        throw .cdrom(path: path, reason: reason)
      }
    }
    let networks: [OpenedNetwork]
    do { networks = try OpenedNetwork.openAll(configuration.networks, machineName: configuration.name) } catch {
      for disk in disks { disk.backend.close() }
      cdrom?.backend.close()
      throw error
    }
    trace.mark("checks")

    installKickHandler
    let core: MachineCore
    if let early = prepared?.core, early.fits(configuration, backing: backing) {
      core = early
    } else {
      core = try MachineCore(configuration: configuration, backing: backing, firmware: firmware, kvmPath: kvmPath)
    }
    hostKind = core.hostKind
    kvm = core.kvm
    vm = core.vm
    memory = core.memory
    vcpus = core.vcpus

    // A firmware's "nothing to boot" gets skvm's hint (what the machine lacks) on standard error.
    let serialOutput: any ConsoleOutput = firmware == nil ? console : FirmwareMessageWatcher(console)
    serial = SerialPort(
      output: serialOutput, interrupt: KVMInterruptLine(vm: vm, gsi: UInt32(SerialPort.com1Interrupt)))
    try reserveKernelRanges(ram: ranges)
    try addPlatformDevices()
    // Every machine has its PCI host bridge, as every PC does, devices or not: a guest
    // kernel finds configuration space (and no alarming "no config space access" message).
    let pci = try PCIDevices(
      disks: disks, cdrom: cdrom, console: configuration.consoleDevice == .virtio ? console : nil,
      entropy: configuration.entropy, networks: networks, vCPUs: configuration.cpuCount, vm: vm, memory: memory,
      registry: devices)
    do throws(IOBusError) { try pci.register(ports: portBus, mmio: mmioBus) } catch { throw .device(error) }
    pci.startIOThreads()
    self.pci = pci
    trace.mark("devices")
    if let payload {
      try boot(payload, ranges: ranges)
      trace.mark("boot")
    }
    workers = vcpus.map {
      VCPUWorker(
        vcpu: $0, portBus: portBus, mmioBus: mmioBus, memory: memory, gate: gate, owner: self,
        timesExits: configuration.timesExits)
    }
    if let restoring {
      try restoreState(from: restoring.snapshot)
      trace.mark("restore")
    }
  }

  /// Opens (creates, truncates) the file `--debugcon` names.
  private static func openDebugConsole(_ path: String) throws(VirtualMachineError) -> DebugConsolePort {
    let descriptor = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
    guard descriptor >= 0 else {
      throw .debugConsole(path: path, reason: "\(String(cString: strerror(errno))): give a file skvm can write")
    }
    return DebugConsolePort(descriptor: descriptor)
  }

  /// What KVM serves in the kernel, and guest RAM, marked on the buses (see `ReservedRange`).
  private func reserveKernelRanges(ram ranges: [(guestAddress: UInt64, size: UInt64)]) throws(VirtualMachineError) {
    let ports: [(String, UInt64, UInt64)] = [
      ("i8259 PIC master (KVM)", 0x20, 2), ("i8254 PIT (KVM)", 0x40, 4),
      ("i8259 PIC slave (KVM)", 0xA0, 2), ("i8259 ELCR (KVM)", 0x4D0, 2),
    ]
    var mmio: [(String, UInt64, UInt64)] = ranges.map { ("RAM", $0.guestAddress, $0.size) }
    if let firmware { mmio.append(("BIOS ROM", firmware.guestAddress, UInt64(firmware.image.count))) }
    mmio += [
      ("IOAPIC (KVM)", X86MemoryMap.ioAPIC, 0x1000), ("local APIC (KVM)", X86MemoryMap.localAPIC, 0x1000),
      (
        "KVM identity map and TSS", X86MemoryMap.kvmIdentityMap,
        X86MemoryMap.kvmTSS + 0x3000 - X86MemoryMap.kvmIdentityMap
      ),
    ]
    do throws(IOBusError) {
      for (name, base, size) in ports { try portBus.register(ReservedRange(name), base: base, size: size) }
      for (name, base, size) in mmio { try mmioBus.register(ReservedRange(name), base: base, size: size) }
    } catch {
      throw .device(error)
    }
  }

  private func addPlatformDevices() throws(VirtualMachineError) {
    try addPlatform(
      serial, id: "serial0", kind: "16550A UART (COM1)", port: SerialPort.com1Base, size: SerialPort.registerCount)
    try addPlatform(
      I8042Controller(control: self), id: "i8042", kind: "i8042 keyboard controller", port: I8042Controller.base,
      size: I8042Controller.size)
    try addPlatform(
      ResetControlRegister(control: self), id: "reset-control", kind: "reset control register",
      port: ResetControlRegister.port, size: 1)
    try addPlatform(PostCodePort(), id: "post-code", kind: "POST code port", port: PostCodePort.port, size: 1)
    try addPlatform(CMOSClock(), id: "rtc", kind: "CMOS real-time clock", port: CMOSClock.base, size: CMOSClock.size)
    try addPlatform(PanicNotifier(control: self), id: "pvpanic", kind: "pvpanic", port: PanicNotifier.port, size: 1)
    // fw_cfg, as on QEMU's PC: what firmware reads (RAM map, CPUs, ACPI tables).
    let firmwareConfig = FirmwareConfig(
      contents: .machine(
        cpuCount: configuration.cpuCount, ranges: memory.regions.map { ($0.guestAddress, $0.size) },
        acpi: RelocatableACPITables(cpuCount: configuration.cpuCount, pci: true),
        boot: configuration.firmwareBoot, diskCount: configuration.disks.count, hasCDROM: configuration.cdrom != nil),
      memory: memory)
    try addPlatform(
      firmwareConfig, id: "fw_cfg", kind: "QEMU firmware configuration (fw_cfg)", port: FirmwareConfig.base,
      size: FirmwareConfig.size, addedLater: true)
    let powerManagement = ACPIPowerManagement(
      control: self, interrupt: KVMInterruptLine(vm: vm, gsi: ACPIPowerManagement.sciInterrupt))
    try addPlatform(
      powerManagement, id: "acpi-pm", kind: "ACPI PM1 registers", port: ACPIPowerManagement.base,
      size: ACPIPowerManagement.size)
    self.powerManagement = powerManagement
    if let debugConsole { try addDevice(debugConsole, port: UInt16(DebugConsolePort.port), size: 1) }
    if let port = configuration.debugExitPort {
      try addPlatform(
        DebugExitPort(control: self), id: "debug-exit", kind: "isa-debug-exit", port: UInt64(port),
        size: DebugExitPort.size)
    }
  }

  /// Puts a platform device on the port bus and in the registry.
  private func addPlatform<Device: IODevice & StatefulDevice>(
    _ device: Device, id: String, kind: String, port: UInt64, size: UInt64, addedLater: Bool = false
  ) throws(VirtualMachineError) {
    try addDevice(device, port: UInt16(port), size: UInt16(size))
    do { try devices.register(device, id: id, kind: kind, addedLater: addedLater) } catch {
      throw .deviceRegistry(error)
    }
  }

  private func boot(_ payload: BootPayload, ranges: [(guestAddress: UInt64, size: UInt64)]) throws(VirtualMachineError)
  {
    do {
      try wireLocalInterrupts()
      switch (configuration.boot, payload) {
      case (.flat(_, let entry), .flat(let image)), (.flatImage(_, let entry), .flat(let image)):
        try FlatBinaryBoot.load(image, into: memory)
        try FlatBinaryBoot.configureBootCPU(vcpus[0], mode: entry, memory: memory, cpuCount: vcpus.count)
      case (.linux(_, _, let commandLine), _):
        try bootLinux(payload, commandLine: commandLine, ranges: ranges)
      case (.firmware, .firmware):
        // The boot vCPU stays at the reset vector (real mode, CS base 0xFFFF0000, IP 0xFFF0),
        // where KVM creates it: the firmware takes it from there.
        try firmware?.copyLowAlias(into: memory)
      default:
        throw VirtualMachineError.kvm(KVMError("boot", errno: EINVAL, detail: "boot source and payload disagree"))
      }
    } catch let error as VirtualMachineError {
      throw error
    } catch let error as BootError {
      throw .boot(error)
    } catch let error as LinuxBootError {
      throw .linux(error)
    } catch let error as KVMError {
      throw .kvm(error)
    } catch let error as GuestMemoryError {
      throw .boot(.memory(error))
    } catch {
      throw .kvm(KVMError("boot", errno: EINVAL, detail: "\(error)"))
    }
  }

  /// ACPI tables, then the kernel (bzImage or ELF), initrd, command line and boot vCPU state.
  private func bootLinux(
    _ payload: BootPayload, commandLine: String, ranges: [(guestAddress: UInt64, size: UInt64)]
  ) throws {
    let tables = ACPITables(cpuCount: vcpus.count, pci: true)
    try memory.write(tables.bytes, to: tables.base)
    var e820 = E820Map.standard(ramRanges: ranges)
    if pci != nil { e820 = e820.reserving(X86MemoryMap.pciExpressECAM, size: PCIExpressECAM.size) }
    switch payload {
    case .linux(let kernel, let initrd):
      try LinuxBoot.load(
        kernel: kernel, initrd: initrd, commandLine: commandLine, memory: memory, e820: e820,
        rsdpAddress: tables.rsdpAddress)
      try LinuxBoot.configureBootCPU(vcpus[0], memory: memory)
    case .linuxELF(let kernel, let initrd):
      let entry = try LinuxBoot.load(
        elf: kernel, initrd: initrd, commandLine: commandLine, memory: memory, e820: e820,
        rsdpAddress: tables.rsdpAddress)
      switch entry {
      case .pvh(let address): try PVHBoot.configureBootCPU(vcpus[0], entry: address)
      case .startup64(let address): try LinuxBoot.configureBootCPU(vcpus[0], memory: memory, entry: address)
      }
    case .flat, .firmware:
      throw VirtualMachineError.kvm(KVMError("boot", errno: EINVAL, detail: "a Linux boot source without a kernel"))
    }
  }

  /// Local APIC LINT0 as ExtINT (the PICs, for virtual-wire mode) and LINT1 as NMI on
  /// every vCPU, as PC firmware leaves them.
  private func wireLocalInterrupts() throws(KVMError) {
    for vcpu in vcpus {
      var registers = try vcpu.localAPIC()
      let lint0: UInt32 = 0x7 << 8  // ExtINT
      let lint1: UInt32 = 0x4 << 8  // NMI
      for (offset, value) in [(0x350, lint0), (0x360, lint1)] {
        for byte in 0..<4 { registers[offset + byte] = UInt8(truncatingIfNeeded: value >> (8 * byte)) }
      }
      try vcpu.setLocalAPIC(registers)
    }
  }

  /// Presses the ACPI power button (QMP's `system_powerdown`).
  public func pressPowerButton() {
    powerManagement?.pressPowerButton()
  }

  // MARK: Devices

  /// Adds a device at ports `[port, port + size)`. Call before `run()`.
  public func addDevice(_ device: any IODevice, port: UInt16, size: UInt16) throws(VirtualMachineError) {
    do { try portBus.register(device, base: UInt64(port), size: UInt64(size)) } catch { throw .device(error) }
  }

  /// Adds a device at guest-physical `[address, address + size)`.
  public func addDevice(_ device: any IODevice, mmio address: UInt64, size: UInt64) throws(VirtualMachineError) {
    do { try mmioBus.register(device, base: address, size: size) } catch { throw .device(error) }
  }

  /// Every range of the port and MMIO spaces that something owns — platform devices, PCI,
  /// what KVM serves in the kernel, RAM — in address order; what is not listed is free for
  /// `addDevice`.
  public var addressMap: [AddressRange] {
    [portBus, mmioBus].flatMap { bus in
      bus.allMappings.map { AddressRange(kind: bus.kind, base: $0.base, size: $0.size, owner: $0.device.name) }
    }
  }

  /// The nearest free ranges below and above `address` with room for `size` bytes.
  public func freeRanges(_ kind: IOBus.Kind, fitting size: UInt64, near address: UInt64) -> [ClosedRange<UInt64>] {
    (kind == .port ? portBus : mmioBus).freeRanges(fitting: size, near: address)
  }

  // MARK: Lifecycle

  /// Runs the machine until it stops, on one OS thread per vCPU, and returns why it stopped.
  /// May be called once. `whenStarted` runs on this thread once every vCPU thread has started.
  public func run(whenStarted: (() -> Void)? = nil) throws(VirtualMachineError) -> VirtualMachineExit {
    guard !started.exchange(true, ordering: .sequentiallyConsistent) else { throw .alreadyStarted }
    for worker in workers {
      do {
        let thread = try OSThread(name: "vcpu\(worker.vcpu.id)") { worker.run() }
        worker.thread = thread
        threads.withLock { $0.append(thread) }
        if gate.needsAttention { thread.signal(ckvm_kick_signal()) }
      } catch {
        stop(with: .vmmFailure(error.description))
        break
      }
    }
    whenStarted?()
    stopped.wait()
    // Taken out of the list before they are joined: a kick never reaches a joined thread.
    let joining = threads.withLock { threads in
      defer { threads = [] }
      return threads
    }
    for thread in joining { thread.join() }
    pci?.stopIOThreads()
    return outcome.withLock { $0 } ?? .vmmFailure("the machine stopped without a reason")
  }

  /// Runs the machine without blocking the caller's task: the waiting happens on a
  /// dedicated OS thread, never on Swift concurrency's cooperative pool.
  public func run() async throws(VirtualMachineError) -> VirtualMachineExit {
    let result: Result<VirtualMachineExit, VirtualMachineError> = await withCheckedContinuation { continuation in
      do {
        _ = try OSThread(name: "vm-run") { [self] in
          do throws(VirtualMachineError) {
            continuation.resume(returning: .success(try run()))
          } catch {
            continuation.resume(returning: .failure(error))
          }
        }
      } catch {
        continuation.resume(returning: .success(.vmmFailure("\(error)")))
      }
    }
    return try result.get()
  }

  /// Stops the machine on behalf of the host (a signal, a monitor command, the embedding program).
  public func stop(reason: String) {
    stop(with: .stoppedByHost(reason: reason))
  }

  public func requestStop(_ request: StopRequest) {
    switch request {
    case .debugExit(let value): stop(with: .debugExit(value: value))
    case .reset(let source): stop(with: .reset(source: source))
    case .powerOff(let source): stop(with: .powerOff(source: source))
    case .guestPanicked: stop(with: .guestPanicked)
    }
  }

  /// Records `exit` if it is the first reason to stop, and kicks every vCPU out of the guest.
  func stop(with exit: VirtualMachineExit) {
    let first = outcome.withLock { current in
      if current != nil { return false }
      current = exit
      return true
    }
    guard first else { return }
    gate.requestStop()
    kickAll()
    stopped.fire()
  }

  /// Makes every vCPU leave `KVM_RUN` soon: `immediate_exit` for one about to enter, the
  /// kick signal for one inside. The caller has already said why, in the run gate.
  private func kickAll() {
    for vcpu in vcpus { vcpu.requestImmediateExit() }
    let current = pthread_self()
    // Signalled with the list locked: `run()` removes threads from it before joining them.
    threads.withLock { threads in
      for thread in threads where pthread_equal(thread.handle, current) == 0 { thread.signal(ckvm_kick_signal()) }
    }
  }

  // MARK: Pause and resume

  /// True while the vCPUs are held out of the guest by `pause()`.
  public var isPaused: Bool { pauseLock.withLock { $0 } }

  /// Takes every vCPU out of the guest and parks it; returns once all are parked (or the
  /// machine has stopped). Guest state is then stable until `resume()`. Idempotent.
  public func pause() {
    pauseLock.withLock { paused in
      guard !paused else { return }
      paused = true
      var trace = PhaseTrace("pause", enabledBy: "SKVM_TRACE_PAUSE")
      gate.requestPause()
      guard started.load(ordering: .acquiring) else { return }
      kickAll()
      trace.mark("kick")
      _ = gate.waitUntilParked(vcpus.count)
      trace.mark("vCPUs parked")
      // Then the device threads, at a request boundary, with block requests in flight completed:
      // from here until resume nothing writes guest memory or the devices' state.
      pci?.quiesce()
      trace.mark("devices quiesced")
      trace.print()
    }
  }

  /// Lets parked vCPUs enter the guest again. Idempotent.
  public func resume() {
    pauseLock.withLock { paused in
      guard paused else { return }
      paused = false
      pci?.resume()
      gate.releasePause()
    }
  }

  /// Runs `body` with every vCPU parked (pausing and resuming around it if the machine was
  /// running), so their registers can be read from this thread.
  public func withVCPUsParked<T>(_ body: ([KVMVCPU]) throws -> T) rethrows -> T {
    let wasPaused = isPaused
    if !wasPaused { pause() }
    defer { if !wasPaused { resume() } }
    return try body(vcpus)
  }

  /// The Linux thread id of each vCPU's thread (0 before `run()` starts it).
  public var vcpuThreadIDs: [Int32] { workers.map { $0.threadID.load(ordering: .relaxed) } }

  /// Where each vCPU was when the machine stopped, one line per vCPU. Complete once `run()` has returned.
  public var vcpuPositions: [String] {
    workers.map { worker in
      guard let position = worker.finalPosition else { return "vCPU \(worker.vcpu.id): position unknown" }
      return
        "vCPU \(worker.vcpu.id) was at RIP 0x\(String(position.instructionPointer, radix: 16)) (CPL \(position.privilegeLevel))"
    }
  }

  /// Closes the disk images (releasing their locks) after `run()` has returned, so a fresh
  /// machine (a reset) can open them again.
  public func releaseDisks() {
    pci?.stopIOThreads()
    pci?.closeDisks()
  }

  /// Per-device request counts and bytes (the devices that keep figures), one line each.
  public var deviceStatistics: [String] { devices.statisticsLines }

  /// The functions on PCI bus 0: the host bridge and every virtio device.
  public var pciFunctions: [PCIFunctionSummary] { pci?.functionSummaries ?? [] }

  /// Hands console input to the console device (virtio-console if there is one, else COM1);
  /// returns how many bytes it took.
  public func receiveConsoleInput(_ bytes: ArraySlice<UInt8>) -> Int {
    // Paused (and quiesced): input waits with its sender, so a snapshot sees no half-delivery.
    if pauseLock.withLock({ $0 }) { return 0 }
    if let console = pci?.console { return console.receive(bytes) }
    return serial.receive(bytes)
  }

  /// Exit statistics summed over all vCPUs. Complete once `run()` has returned.
  public var statistics: ExitStatistics {
    var total = ExitStatistics()
    for worker in workers { total.add(worker.statistics) }
    return total
  }
}

/// Installs the vCPU kick-signal handler once per process.
private let installKickHandler: Void = {
  _ = ckvm_install_kick_handler()
}()
