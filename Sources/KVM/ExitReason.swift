import CKVM

/// Names for `KVM_EXIT_*` values, for statistics and error reports.
public enum ExitReasonName {
  /// The largest exit reason number tracked in per-reason tables.
  public static let tableSize = 64

  /// `KVM_EXIT_IO` → "io", and so on; unknown values print as their number.
  public static func name(of reason: UInt32) -> String {
    switch Int32(reason) {
    case KVM_EXIT_UNKNOWN: "unknown"
    case KVM_EXIT_EXCEPTION: "exception"
    case KVM_EXIT_IO: "io"
    case KVM_EXIT_HYPERCALL: "hypercall"
    case KVM_EXIT_DEBUG: "debug"
    case KVM_EXIT_HLT: "hlt"
    case KVM_EXIT_MMIO: "mmio"
    case KVM_EXIT_IRQ_WINDOW_OPEN: "irq-window-open"
    case KVM_EXIT_SHUTDOWN: "shutdown"
    case KVM_EXIT_FAIL_ENTRY: "fail-entry"
    case KVM_EXIT_INTR: "intr"
    case KVM_EXIT_SET_TPR: "set-tpr"
    case KVM_EXIT_TPR_ACCESS: "tpr-access"
    case KVM_EXIT_NMI: "nmi"
    case KVM_EXIT_INTERNAL_ERROR: "internal-error"
    case KVM_EXIT_SYSTEM_EVENT: "system-event"
    case KVM_EXIT_IOAPIC_EOI: "ioapic-eoi"
    case KVM_EXIT_HYPERV: "hyperv"
    case KVM_EXIT_X86_RDMSR: "rdmsr"
    case KVM_EXIT_X86_WRMSR: "wrmsr"
    case KVM_EXIT_DIRTY_RING_FULL: "dirty-ring-full"
    default: "exit-\(reason)"
    }
  }
}
