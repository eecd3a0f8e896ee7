import CKVM
import Devices
import Glibc
import KVM

/// The state KVM keeps for the whole VM: the in-kernel PIC pair and IOAPIC, the PIT, and the
/// kvmclock with the wall-clock time it was read at.
public struct KernelDeviceState: Codable, Sendable, Equatable {
  /// `struct kvm_irqchip` for the master PIC, the slave PIC and the IOAPIC, as raw bytes
  /// without their trailing zeros (as `pit`).
  public var interruptControllers: [Base64Bytes]
  public var pit: Base64Bytes
  public var clock: UInt64
  public var clockFlags: UInt32
  /// KVM's own CLOCK_REALTIME reading beside `clock` (with `KVM_CLOCK_REALTIME`), else 0.
  public var clockRealtime: UInt64
  /// This process's CLOCK_REALTIME when the state was read, in nanoseconds.
  public var savedAtNanoseconds: UInt64

  static func capture(_ vm: KVMVirtualMachine) throws(KVMError) -> KernelDeviceState {
    var chips: [Base64Bytes] = []
    for chip in KVMVirtualMachine.InterruptController.allCases {
      chips.append(Base64Bytes(trimmingTrailingZeros: kvmStructBytes(try vm.interruptControllerState(chip))))
    }
    let clock = try vm.clock()
    return KernelDeviceState(
      interruptControllers: chips, pit: Base64Bytes(trimmingTrailingZeros: kvmStructBytes(try vm.pitState())),
      clock: clock.clock,
      clockFlags: clock.flags,
      clockRealtime: clock.realtime, savedAtNanoseconds: realtimeNanoseconds())
  }

  /// Restores the interrupt controllers and the PIT, and the kvmclock advanced by the wall-clock
  /// time that passed since the save (by KVM itself where it offers `KVM_CLOCK_REALTIME`), so
  /// the guest's clock does not fall behind.
  func restore(into vm: KVMVirtualMachine) throws(VirtualMachineError) {
    guard interruptControllers.count == 3 else {
      throw .snapshot("the snapshot has \(interruptControllers.count) interrupt controllers, not 3")
    }
    do {
      for (index, saved) in interruptControllers.enumerated() {
        guard var chip = kvmStruct(InterruptControllerState.self, from: saved.bytes, zero: InterruptControllerState())
        else {
          throw VirtualMachineError.snapshot("interrupt controller \(index) has \(saved.bytes.count) bytes")
        }
        chip.chip_id = UInt32(index)
        try vm.setInterruptControllerState(chip)
      }
      guard let pitState = kvmStruct(PITState.self, from: pit.bytes, zero: PITState()) else {
        throw VirtualMachineError.snapshot("the PIT state has \(pit.bytes.count) bytes")
      }
      try vm.setPITState(pitState)
      var clockState = ClockState()
      let realtimeFlag = UInt32(KVM_CLOCK_REALTIME)
      let supported = UInt32(truncatingIfNeeded: vm.checkExtension(Int32(KVM_CAP_ADJUST_CLOCK)))
      if clockFlags & realtimeFlag != 0 && supported & realtimeFlag != 0 {
        clockState.clock = clock
        clockState.realtime = clockRealtime
        clockState.flags = realtimeFlag
      } else {
        let elapsed = realtimeNanoseconds() &- savedAtNanoseconds
        clockState.clock = clock &+ (elapsed < 1 << 62 ? elapsed : 0)
      }
      try vm.setClock(clockState)
    } catch let error as VirtualMachineError {
      throw error
    } catch {
      throw .snapshot("KVM refused the saved interrupt controllers, PIT or clock: \(error)")
    }
  }
}

/// CLOCK_REALTIME in nanoseconds.
func realtimeNanoseconds() -> UInt64 {
  var time = timespec()
  clock_gettime(CLOCK_REALTIME, &time)
  return UInt64(time.tv_sec) &* 1_000_000_000 &+ UInt64(time.tv_nsec)
}
