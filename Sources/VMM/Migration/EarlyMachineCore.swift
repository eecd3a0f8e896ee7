import GuestMemory
import Machine

/// Builds an incoming machine's `MachineCore` on a thread of its own as soon as the source's
/// hello is accepted, while RAM streams in: by the switch-over the VM, its RAM mapping and its
/// vCPUs exist, and the stop is shorter. Anything that goes wrong just leaves no core (the
/// restore then builds one as usual).
final class EarlyMachineCore: @unchecked Sendable {
  private let lock = ConditionLock()
  private var core: MachineCore?
  private var building = false

  /// Starts building for `configuration`, its RAM in `fd` at `offsets` — if the source's RAM
  /// map is the one this machine would have.
  func start(
    configuration: VirtualMachineConfiguration, fd: Int32, ranges: [(UInt64, UInt64)], offsets: [UInt64]
  ) {
    let wanted = X86MemoryMap.ramRanges(size: configuration.memorySize)
    guard wanted.count == ranges.count, zip(wanted, ranges).allSatisfy({ $0.guestAddress == $1.0 && $0.size == $1.1 })
    else { return }
    lock.withLock { building = true }
    let thread = try? OSThread(name: "early-core") { [self] in
      let built = try? MachineCore(
        configuration: configuration, backing: .file(fd: fd, offsets: offsets),
        firmware: try? ConfigurationCheck.firmware(configuration.boot), kvmPath: "/dev/kvm")
      // The state's decoder too, while RAM streams in: the switch-over then decodes at full speed.
      MachineState.warmUp(configuration: configuration)
      lock.withLock {
        core = built
        building = false
        lock.broadcast()
      }
      // Then the rest of the machine, rehearsed on a scratch one.
      VirtualMachine.rehearse(configuration)
    }
    if thread == nil { lock.withLock { building = false } }
  }

  /// The core, once built (waits for a build under way); nil if none was built.
  func take() -> MachineCore? {
    lock.withLock {
      lock.wait { !building }
      defer { core = nil }
      return core
    }
  }
}
