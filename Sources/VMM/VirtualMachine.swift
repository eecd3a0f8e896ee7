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
/// Everything that can be checked is checked before `/dev/kvm` is touched, so a
/// bad configuration fails with a clear error and no VM is ever half-built.
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

  private let vcpus: [KVMVCPU]
  private var workers: [VCPUWorker] = []
  private let stopping = StopFlag()
  private let started = Atomic<Bool>(false)
  private let outcome = Mutex<VirtualMachineExit?>(nil)
  private let stopped = OneShotEvent()
  private let threads = Mutex<[OSThread]>([])

  /// Builds the machine. Nothing runs until `run()`.
  public init(
    configuration: VirtualMachineConfiguration, console: any ConsoleOutput = FileDescriptorConsoleOutput(),
    kvmPath: String = "/dev/kvm"
  ) throws(VirtualMachineError) {
    self.configuration = configuration
    try ConfigurationCheck.memorySize(configuration.memorySize)
    if configuration.cpuCount < 1 {
      throw .invalidCPUCount(configuration.cpuCount, maximum: ConfigurationCheck.cpuLimit)
    }
    let ranges = X86MemoryMap.ramRanges(size: configuration.memorySize)
    let image = try ConfigurationCheck.bootImage(configuration.boot, ramBelowHole: ranges[0].size)

    hostKind = HostKVMKind.detect()
    do { kvm = try KVMSystem(path: kvmPath) } catch { throw .kvmUnavailable(error) }
    let maximum = min(kvm.maximumVCPUs, ConfigurationCheck.cpuLimit)
    if configuration.cpuCount > maximum { throw .invalidCPUCount(configuration.cpuCount, maximum: maximum) }
    installKickHandler

    do {
      vm = try kvm.createVirtualMachine()
      // Memory slots before the irqchip and PIT: a slot change after them waits for an
      // SRCU grace period (measured: 5–8 ms per slot on a PVM host, 0.1 ms before).
      memory = try GuestMemory(ranges: ranges)
      try memory.map(into: vm)
      try Self.setUpPlatform(vm, hostKind: hostKind)
      let policy = CPUIDPolicy(supported: try kvm.supportedCPUID(), cpuCount: configuration.cpuCount)
      var vcpus: [KVMVCPU] = []
      for id in 0..<UInt32(configuration.cpuCount) {
        let vcpu = try vm.createVCPU(id: id)
        try vcpu.setCPUID(policy.table(forAPICID: id))
        vcpus.append(vcpu)
      }
      self.vcpus = vcpus
    } catch let error as KVMError {
      throw .kvm(error)
    } catch let error as GuestMemoryAllocationError {
      throw .memoryAllocation(error)
    } catch {
      throw .kvm(KVMError("VM setup", errno: 0, detail: "\(error)"))
    }

    serial = SerialPort(output: console)
    try addPlatformDevices()
    try boot(image)
    workers = vcpus.map {
      VCPUWorker(
        vcpu: $0, portBus: portBus, mmioBus: mmioBus, memory: memory, stopFlag: stopping, owner: self,
        timesExits: configuration.timesExits)
    }
  }

  private static func setUpPlatform(_ vm: KVMVirtualMachine, hostKind: HostKVMKind) throws(KVMError) {
    // Intel hosts need these pages reserved for real-mode emulation; elsewhere they are harmless,
    // and a KVM that does not implement them (PVM) needs neither.
    do {
      try vm.setIdentityMapAddress(X86MemoryMap.kvmIdentityMap)
      try vm.setTSSAddress(X86MemoryMap.kvmTSS)
    } catch {
      if hostKind == .vmx { throw error }
    }
    try vm.createInterruptController()
    try vm.createPIT()
  }

  private func addPlatformDevices() throws(VirtualMachineError) {
    try addDevice(serial, port: UInt16(SerialPort.com1Base), size: UInt16(SerialPort.registerCount))
    try addDevice(
      I8042Controller(control: self), port: UInt16(I8042Controller.base), size: UInt16(I8042Controller.size))
    try addDevice(ResetControlRegister(control: self), port: UInt16(ResetControlRegister.port), size: 1)
    try addDevice(PostCodePort(), port: UInt16(PostCodePort.port), size: 1)
    if let port = configuration.debugExitPort {
      try addDevice(DebugExitPort(control: self), port: port, size: UInt16(DebugExitPort.size))
    }
  }

  private func boot(_ image: [UInt8]) throws(VirtualMachineError) {
    switch configuration.boot {
    case .flat(_, let entry), .flatImage(_, let entry):
      do {
        try FlatBinaryBoot.load(image, into: memory)
        try FlatBinaryBoot.configureBootCPU(vcpus[0], mode: entry, memory: memory, cpuCount: vcpus.count)
      } catch {
        throw .boot(error)
      }
    }
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

  // MARK: Lifecycle

  /// Runs the machine until it stops, on one OS thread per vCPU, and returns why it stopped.
  /// May be called once.
  public func run() throws(VirtualMachineError) -> VirtualMachineExit {
    guard !started.exchange(true, ordering: .sequentiallyConsistent) else { throw .alreadyStarted }
    for worker in workers {
      do {
        let thread = try OSThread(name: "vcpu\(worker.vcpu.id)") { worker.run() }
        worker.thread = thread
        threads.withLock { $0.append(thread) }
        if stopping.isSet { thread.signal(ckvm_kick_signal()) }
      } catch {
        stop(with: .vmmFailure(error.description))
        break
      }
    }
    stopped.wait()
    for thread in threads.withLock({ $0 }) { thread.join() }
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
    stopping.set()
    for vcpu in vcpus { vcpu.requestImmediateExit() }
    let current = pthread_self()
    for thread in threads.withLock({ $0 }) where pthread_equal(thread.handle, current) == 0 {
      thread.signal(ckvm_kick_signal())
    }
    stopped.fire()
  }

  /// Where each vCPU was when the machine stopped, one line per vCPU. Complete once `run()` has returned.
  public var vcpuPositions: [String] {
    workers.map { worker in
      guard let position = worker.finalPosition else { return "vCPU \(worker.vcpu.id): position unknown" }
      return
        "vCPU \(worker.vcpu.id) was at RIP 0x\(String(position.instructionPointer, radix: 16)) (CPL \(position.privilegeLevel))"
    }
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
