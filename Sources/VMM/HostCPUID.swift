import KVM
import Synchronization

/// What `KVM_GET_SUPPORTED_CPUID` reports, fetched once per process and ahead of need.
///
/// The ioctl runs CPUID for every leaf; where CPUID traps to an outer hypervisor (nested
/// hosts) that takes about a millisecond. `skvm run` starts it on a thread of its own while
/// the command line is parsed (`prefetch`), and the machine takes the answer when it builds
/// its vCPUs. The answer depends on the host alone, so any `/dev/kvm` descriptor gives it.
public enum HostCPUID {
  private final class Fetch: @unchecked Sendable {
    let path: String
    let lock = ConditionLock()
    /// Guarded by `lock`.
    var done = false
    var table: CPUIDTable?
    init(path: String) { self.path = path }
  }

  /// The fetch under way or done, if any.
  private static let current = Mutex<Fetch?>(nil)

  /// Starts fetching the table for the KVM at `kvmPath` on a thread of its own (once).
  public static func prefetch(kvmPath: String = "/dev/kvm") {
    let started: Fetch? = current.withLock { fetch in
      guard fetch == nil else { return nil }
      let new = Fetch(path: kvmPath)
      fetch = new
      return new
    }
    guard let started else { return }
    let work: @Sendable () -> Void = {
      let table = try? KVMSystem(path: kvmPath).supportedCPUID()
      started.lock.withLock {
        started.table = table
        started.done = true
        started.lock.broadcast()
      }
    }
    if (try? OSThread(name: "cpuid", work)) == nil { work() }
  }

  /// The supported table for `kvm`: the prefetched one when it was fetched from the same
  /// path (waiting for it if need be), else asked for now and kept for next time.
  public static func supported(by kvm: KVMSystem) throws(KVMError) -> CPUIDTable {
    if let started = current.withLock({ $0 }), started.path == kvm.path {
      let table = started.lock.withLock {
        started.lock.wait { started.done }
        return started.table
      }
      if let table { return table }
    }
    let table = try kvm.supportedCPUID()
    let kept = Fetch(path: kvm.path)
    kept.done = true
    kept.table = table
    current.withLock { $0 = kept }
    return table
  }
}
