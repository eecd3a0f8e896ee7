import SwiftKVM
import Testing

/// The CPUID table fetched ahead of need is the one KVM gives when asked directly.
@Suite("Host CPUID prefetch")
struct HostCPUIDTests {
  @Test("A prefetched table equals KVM_GET_SUPPORTED_CPUID asked now; machines built after it boot")
  func prefetchedTableMatches() async throws {
    HostCPUID.prefetch()
    HostCPUID.prefetch()  // once per process: a second call starts nothing
    let kvm = try KVMSystem()
    let direct = try kvm.supportedCPUID()
    #expect(try HostCPUID.supported(by: kvm) == direct)
    #expect(try HostCPUID.supported(by: kvm) == direct, "asked again: the kept answer")
    let run = try await GuestRunner.run(BuiltInGuest.helloConfiguration, timeout: 30)
    #expect(run.output.hasPrefix("Hello from a SwiftKVM guest"))
  }
}
