import GuestMemory
import KVM
import Machine

/// The KVM side of a machine: the VM, its RAM mapped (and a firmware ROM), the platform's
/// in-kernel interrupt controllers and timer, and the vCPUs with their CPUID. A machine builds
/// it first thing; an incoming migration builds it while RAM is still arriving (its memfd is
/// mapped copy-on-write before the pages are in it, and nothing reads them until the guest
/// runs), so the stop at the switch-over is shorter by that much.
public final class MachineCore: @unchecked Sendable {
  let hostKind: HostKVMKind
  let kvm: KVMSystem
  let vm: KVMVirtualMachine
  let memory: GuestMemory
  let vcpus: [KVMVCPU]
  /// What RAM was built from: a machine takes a core only if it wants the same.
  let ramFile: (fd: Int32, offsets: [UInt64])?
  let cpuCount: Int
  let memorySize: UInt64

  init(
    configuration: VirtualMachineConfiguration, backing: GuestMemory.Backing, firmware: FirmwareROM?,
    kvmPath: String
  ) throws(VirtualMachineError) {
    let trace = StartupTrace.shared
    hostKind = HostKVMKind.detect()
    do { kvm = try KVMSystem(path: kvmPath) } catch { throw .kvmUnavailable(error) }
    let maximum = min(kvm.maximumVCPUs, ConfigurationCheck.cpuLimit)
    if configuration.cpuCount > maximum { throw .invalidCPUCount(configuration.cpuCount, maximum: maximum) }
    trace.mark("kvm")
    do {
      vm = try kvm.createVirtualMachine()
      // Memory slots before the irqchip and PIT: a slot change after them waits for an
      // SRCU grace period (measured: 5–8 ms per slot on a PVM host, 0.1 ms before).
      memory = try GuestMemory(ranges: X86MemoryMap.ramRanges(size: configuration.memorySize), backing: backing)
      try memory.map(into: vm)
      try firmware?.map(into: vm)
      trace.mark("ram")
      try Self.setUpPlatform(vm, hostKind: hostKind)
      let policy = CPUIDPolicy(supported: try HostCPUID.supported(by: kvm), cpuCount: configuration.cpuCount)
      var vcpus: [KVMVCPU] = []
      for id in 0..<UInt32(configuration.cpuCount) {
        let vcpu = try vm.createVCPU(id: id)
        try vcpu.setCPUID(policy.table(forAPICID: id))
        vcpus.append(vcpu)
      }
      self.vcpus = vcpus
      trace.mark("vcpus")
    } catch let error as KVMError {
      throw .kvm(error)
    } catch let error as GuestMemoryAllocationError {
      throw .memoryAllocation(error)
    } catch {
      throw .kvm(KVMError("VM setup", errno: 0, detail: "\(error)"))
    }
    if case .file(let fd, let offsets) = backing { ramFile = (fd, offsets) } else { ramFile = nil }
    cpuCount = configuration.cpuCount
    memorySize = configuration.memorySize
  }

  /// Whether this core fits a machine of `configuration` whose RAM is `backing`.
  func fits(_ configuration: VirtualMachineConfiguration, backing: GuestMemory.Backing) -> Bool {
    guard case .file(let fd, let offsets) = backing, let ramFile else { return false }
    return ramFile.fd == fd && ramFile.offsets == offsets && cpuCount == configuration.cpuCount
      && memorySize == configuration.memorySize
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
}
