import CKVM
import Glibc

/// One in-kernel interrupt controller's state (`struct kvm_irqchip`).
public typealias InterruptControllerState = kvm_irqchip
/// The in-kernel i8254 PIT's state.
public typealias PITState = kvm_pit_state2
/// The kvmclock's state (`struct kvm_clock_data`).
public typealias ClockState = kvm_clock_data

/// The ioctls that read and write the VM-wide state KVM keeps, for snapshots: the in-kernel
/// PIC pair and IOAPIC, the PIT, and the kvmclock.
extension KVMVirtualMachine {
  /// Which in-kernel interrupt controller (`KVM_IRQCHIP_*`).
  public enum InterruptController: UInt32, CaseIterable, Sendable {
    case masterPIC = 0
    case slavePIC = 1
    case ioapic = 2
  }

  /// `KVM_GET_IRQCHIP` for one controller.
  public func interruptControllerState(_ chip: InterruptController) throws(KVMError) -> InterruptControllerState {
    var value = InterruptControllerState()
    value.chip_id = chip.rawValue
    try fd.ioctl(CKVM_GET_IRQCHIP, &value, "KVM_GET_IRQCHIP")
    return value
  }

  /// `KVM_SET_IRQCHIP` (the controller is named inside `state`).
  public func setInterruptControllerState(_ state: InterruptControllerState) throws(KVMError) {
    var value = state
    try fd.ioctl(CKVM_SET_IRQCHIP, &value, "KVM_SET_IRQCHIP")
  }

  /// `KVM_GET_PIT2`.
  public func pitState() throws(KVMError) -> PITState {
    var value = PITState()
    try fd.ioctl(CKVM_GET_PIT2, &value, "KVM_GET_PIT2")
    return value
  }

  /// `KVM_SET_PIT2`.
  public func setPITState(_ state: PITState) throws(KVMError) {
    var value = state
    try fd.ioctl(CKVM_SET_PIT2, &value, "KVM_SET_PIT2")
  }

  /// `KVM_GET_CLOCK`: the kvmclock, with the host's wall-clock time beside it where KVM
  /// provides it (`KVM_CLOCK_REALTIME` in `flags`).
  public func clock() throws(KVMError) -> ClockState {
    var value = ClockState()
    try fd.ioctl(CKVM_GET_CLOCK, &value, "KVM_GET_CLOCK")
    return value
  }

  /// `KVM_SET_CLOCK`. With `KVM_CLOCK_REALTIME` in `state.flags`, KVM advances the clock by
  /// the wall-clock time that passed since `state.realtime`.
  public func setClock(_ state: ClockState) throws(KVMError) {
    var value = state
    try fd.ioctl(CKVM_SET_CLOCK, &value, "KVM_SET_CLOCK")
  }
}
