import Glibc

/// Which kind of KVM the host runs. Detected from the loaded modules, never from a host name.
///
/// Ordinary hosts run `kvm_intel` (VMX) or `kvm_amd` (SVM). `kvm_pvm` is the
/// pagetable-based VM used when KVM itself runs nested inside another VM: guest
/// user mode runs natively there, but guest kernel code is emulated and a stock
/// Linux user space cannot run.
public enum HostKVMKind: String, Sendable, Codable {
  case vmx
  case svm
  case pvm
  case unknown

  /// Detects the host's KVM kind from `/sys/module`.
  public static func detect(sysModule: String = "/sys/module") -> HostKVMKind {
    func loaded(_ name: String) -> Bool { access("\(sysModule)/\(name)", F_OK) == 0 }
    if loaded("kvm_pvm") { return .pvm }
    if loaded("kvm_intel") { return .vmx }
    if loaded("kvm_amd") { return .svm }
    return .unknown
  }

  /// Whether a stock Linux kernel can run its user space on this kind of KVM.
  public var runsStockLinuxUserspace: Bool { self != .pvm }

  /// The module name, for messages.
  public var moduleName: String {
    switch self {
    case .vmx: "kvm_intel"
    case .svm: "kvm_amd"
    case .pvm: "kvm_pvm"
    case .unknown: "unknown"
    }
  }
}
