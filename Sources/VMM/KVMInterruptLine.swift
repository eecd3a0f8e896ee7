import Devices
import KVM

/// A GSI of the in-kernel irqchip, driven with `KVM_IRQ_LINE`.
struct KVMInterruptLine: InterruptLine {
  let vm: KVMVirtualMachine
  let gsi: UInt32

  func set(high: Bool) {
    // Only an fd closed under us can fail here; there is nothing better to do than drop the edge.
    try? vm.setInterruptLine(gsi, high: high)
  }
}
