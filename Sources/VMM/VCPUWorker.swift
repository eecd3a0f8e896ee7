import CKVM
import Devices
import Glibc
import GuestMemory
import KVM
import Synchronization

/// Runs one vCPU on its own OS thread: enters the guest, dispatches each exit, repeats.
///
/// The exit loop is the hot path: it allocates nothing, takes no lock of its own,
/// and reaches a device through one bus lookup. Statistics are this thread's own
/// and are read by others only after the thread has been joined.
final class VCPUWorker: @unchecked Sendable {
  let vcpu: KVMVCPU
  private let portBus: IOBus
  private let mmioBus: IOBus
  private let memory: GuestMemory
  private let gate: RunGate
  private unowned let owner: VirtualMachine
  private let timesExits: Bool
  /// This vCPU's figures; written once, when the loop ends.
  private(set) var statistics = ExitStatistics()
  /// Where the vCPU was when its loop ended (linear RIP, CPL), for reports on hung guests.
  private(set) var finalPosition: (instructionPointer: UInt64, privilegeLevel: UInt16)?
  var thread: OSThread?
  /// The Linux thread id of this vCPU's thread (0 until it starts), for monitors.
  let threadID = Atomic<Int32>(0)

  init(
    vcpu: KVMVCPU, portBus: IOBus, mmioBus: IOBus, memory: GuestMemory, gate: RunGate, owner: VirtualMachine,
    timesExits: Bool
  ) {
    self.vcpu = vcpu
    self.portBus = portBus
    self.mmioBus = mmioBus
    self.memory = memory
    self.gate = gate
    self.owner = owner
    self.timesExits = timesExits
  }

  /// The exit loop; returns when the machine stops.
  func run() {
    ckvm_unblock_kick_signal()
    threadID.store(ckvm_thread_id(), ordering: .relaxed)
    // Everything the loop touches per exit is local: no class-property exclusivity
    // checks, no locks (the bus views refresh only when a bus changes).
    var statistics = ExitStatistics()
    var ports = IOBusView(portBus)
    var mmio = IOBusView(mmioBus)
    let tracesIO = Self.tracesIO
    let run = vcpu.run
    let timed = timesExits
    var firstEntry = true
    // True after an exit whose operation KVM completes only on the next KVM_RUN (port and
    // MMIO reads); false once a KVM_RUN has run again (even one cut short by a kick).
    var completionPending = false
    defer {
      self.statistics = statistics
      recordFinalPosition()
    }
    while true {
      if gate.needsAttention {
        if gate.isStopping { break }
        if completionPending {
          completePendingIO()
          completionPending = false
        }
        gate.park()
        continue
      }
      if firstEntry {
        firstEntry = false
        StartupTrace.shared.markOnce("first entry")
      }
      let entered = timed ? monotonicNanoseconds() : 0
      let exited: Bool
      do {
        exited = try vcpu.enter()
      } catch {
        owner.stop(with: .vmmFailure(error.description))
        return
      }
      let handlingStart = timed ? monotonicNanoseconds() : 0
      if timed { statistics.guestNanoseconds &+= handlingStart &- entered }
      // Entering KVM_RUN completed whatever the previous exit left pending, kicked or not.
      completionPending = false
      guard exited else {
        statistics.interruptions &+= 1
        vcpu.clearImmediateExit()
        continue
      }
      let reason = ckvm_exit_reason(run)
      switch Int32(bitPattern: reason) {
      case KVM_EXIT_IO:
        handlePortIO(run, &ports, &statistics, tracing: tracesIO)
        completionPending = true
      case KVM_EXIT_MMIO:
        handleMMIO(run, &mmio, &statistics)
        completionPending = true
      case KVM_EXIT_INTR: break
      case KVM_EXIT_SHUTDOWN: fail(.tripleFault)
      case KVM_EXIT_INTERNAL_ERROR:
        switch EmulationGaps.complete(vcpu) {
        case .breakpoint: statistics.breakpointsInjected &+= 1
        case .fwait: statistics.fwaitsSkipped &+= 1
        case nil: fail(.internalError(suberror: ckvm_internal_suberror(run)))
        }
      case KVM_EXIT_FAIL_ENTRY: fail(.entryFailure(hardwareReason: ckvm_fail_entry_reason(run)))
      case KVM_EXIT_SYSTEM_EVENT: handleSystemEvent(ckvm_system_event_type(run))
      default: fail(.unexpectedExit(reason: reason))
      }
      if reason < UInt32(ExitReasonName.tableSize) {
        statistics.counts[Int(reason)] &+= 1
        if timed { statistics.handlingNanoseconds[Int(reason)] &+= monotonicNanoseconds() &- handlingStart }
      }
    }
  }

  /// Re-enters KVM_RUN with `immediate_exit` set, so the result of the last port or MMIO
  /// read reaches the vCPU's registers before it parks (KVM completes pending I/O only on
  /// entry): a paused vCPU's state is then whole, ready to be read or saved.
  private func completePendingIO() {
    vcpu.requestImmediateExit()
    _ = try? vcpu.enter()
    vcpu.clearImmediateExit()
  }

  @inline(__always)
  private func handlePortIO(
    _ run: UnsafeMutablePointer<kvm_run>, _ bus: inout IOBusView, _ statistics: inout ExitStatistics,
    tracing: Bool
  ) {
    let port = UInt64(ckvm_io_port(run))
    let width = Int(ckvm_io_size(run))
    let count = Int(ckvm_io_count(run))
    var data = UnsafeMutableRawPointer(run) + Int(ckvm_io_data_offset(run))
    if ckvm_io_direction(run) == UInt8(KVM_EXIT_IO_OUT) {
      for _ in 0..<count {
        if tracing { Self.trace("out", port, width, loadLittleEndian(data, width: width)) }
        if !bus.write(port, width: width, value: loadLittleEndian(data, width: width)) {
          statistics.unclaimedPortAccesses &+= 1
        }
        data += width
      }
    } else {
      for _ in 0..<count {
        let value: UInt64
        if let read = bus.read(port, width: width) {
          value = read
        } else {
          value = .allOnes(width: width)
          statistics.unclaimedPortAccesses &+= 1
        }
        if tracing { Self.trace("in", port, width, value) }
        storeLittleEndian(value, data, width: width)
        data += width
      }
    }
  }

  /// SKVM_TRACE_IO=1 prints every port access on standard error (for bringing up firmware).
  static let tracesIO = getenv("SKVM_TRACE_IO") != nil

  static func trace(_ direction: StaticString, _ port: UInt64, _ width: Int, _ value: UInt64) {
    let line = "skvm: io \(direction) 0x\(String(port, radix: 16))/\(width) 0x\(String(value, radix: 16))\n"
    var bytes = Array(line.utf8)
    _ = write(2, &bytes, bytes.count)
  }

  @inline(__always)
  private func handleMMIO(
    _ run: UnsafeMutablePointer<kvm_run>, _ bus: inout IOBusView, _ statistics: inout ExitStatistics
  ) {
    let address = ckvm_mmio_address(run)
    let width = min(Int(ckvm_mmio_length(run)), 8)
    let data = UnsafeMutableRawPointer(ckvm_mmio_data(run))
    if ckvm_mmio_is_write(run) != 0 {
      if !bus.write(address, width: width, value: loadLittleEndian(data, width: width)) {
        statistics.unclaimedMMIOAccesses &+= 1
      }
    } else {
      let value: UInt64
      if let read = bus.read(address, width: width) {
        value = read
      } else {
        value = .allOnes(width: width)
        statistics.unclaimedMMIOAccesses &+= 1
      }
      storeLittleEndian(value, data, width: width)
    }
  }

  private func handleSystemEvent(_ type: UInt32) {
    switch Int32(bitPattern: type) {
    case KVM_SYSTEM_EVENT_SHUTDOWN: owner.stop(with: .powerOff(source: "KVM system event (shutdown)"))
    case KVM_SYSTEM_EVENT_RESET: owner.stop(with: .reset(source: "KVM system event (reset)"))
    default:
      owner.stop(
        with: .guestFault(
          VCPUFaultReport.make(kind: .unexpectedExit(reason: UInt32(KVM_EXIT_SYSTEM_EVENT)), vcpu: vcpu, memory: memory)
        ))
    }
  }

  private func recordFinalPosition() {
    guard let registers = try? vcpu.registers(), let special = try? vcpu.specialRegisters() else { return }
    let longMode = special.efer & (1 << 10) != 0
    finalPosition = (longMode ? registers.rip : special.cs.base &+ registers.rip, special.cs.selector & 3)
  }

  private func fail(_ kind: VCPUFault.Kind) {
    owner.stop(with: .guestFault(VCPUFaultReport.make(kind: kind, vcpu: vcpu, memory: memory)))
  }
}

/// Reads `width` (1–8) bytes at `pointer` as a little-endian integer.
@inline(__always)
func loadLittleEndian(_ pointer: UnsafeRawPointer, width: Int) -> UInt64 {
  switch width {
  case 1: return UInt64(pointer.load(as: UInt8.self))
  case 2: return UInt64(UInt16(littleEndian: pointer.loadUnaligned(as: UInt16.self)))
  case 4: return UInt64(UInt32(littleEndian: pointer.loadUnaligned(as: UInt32.self)))
  case 8: return UInt64(littleEndian: pointer.loadUnaligned(as: UInt64.self))
  default:
    var value: UInt64 = 0
    for index in 0..<min(width, 8) {
      value |= UInt64(pointer.load(fromByteOffset: index, as: UInt8.self)) << (index * 8)
    }
    return value
  }
}

/// Writes the low `width` (1–8) bytes of `value` at `pointer`, little-endian.
@inline(__always)
func storeLittleEndian(_ value: UInt64, _ pointer: UnsafeMutableRawPointer, width: Int) {
  switch width {
  case 1: pointer.storeBytes(of: UInt8(truncatingIfNeeded: value), as: UInt8.self)
  case 2: pointer.storeBytes(of: UInt16(truncatingIfNeeded: value).littleEndian, as: UInt16.self)
  case 4: pointer.storeBytes(of: UInt32(truncatingIfNeeded: value).littleEndian, as: UInt32.self)
  case 8: pointer.storeBytes(of: value.littleEndian, as: UInt64.self)
  default:
    for index in 0..<min(width, 8) {
      pointer.storeBytes(of: UInt8(truncatingIfNeeded: value >> (index * 8)), toByteOffset: index, as: UInt8.self)
    }
  }
}

/// CLOCK_MONOTONIC in nanoseconds (a vDSO call, no system call).
@inline(__always)
func monotonicNanoseconds() -> UInt64 {
  var time = timespec()
  clock_gettime(CLOCK_MONOTONIC, &time)
  return UInt64(time.tv_sec) &* 1_000_000_000 &+ UInt64(time.tv_nsec)
}
