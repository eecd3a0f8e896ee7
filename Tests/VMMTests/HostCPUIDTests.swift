import SwiftKVM
import Testing

/// The CPUID table fetched ahead of need gives the vCPUs what KVM's answer asked now gives.
@Suite("Host CPUID prefetch")
struct HostCPUIDTests {
  @Test("A prefetched table gives every vCPU the CPUID that KVM_GET_SUPPORTED_CPUID asked now gives; machines boot")
  func prefetchedTableMatches() async throws {
    HostCPUID.prefetch()
    HostCPUID.prefetch()  // once per process: a second call starts nothing
    let kvm = try KVMSystem()
    let direct = try kvm.supportedCPUID()
    // The raw tables may differ in the host CPU's own APIC ids (leaf 1 EBX, leaf 0xB EDX: the
    // prefetch ran on another CPU); the policy sets those per vCPU, so compare what vCPUs get.
    for answer in [try HostCPUID.supported(by: kvm), try HostCPUID.supported(by: kvm)] {
      for id: UInt32 in 0..<4 {
        #expect(
          CPUIDPolicy(supported: answer, cpuCount: 4).table(forAPICID: id)
            == CPUIDPolicy(supported: direct, cpuCount: 4).table(forAPICID: id), "vCPU \(id)")
      }
    }
    let run = try await GuestRunner.run(BuiltInGuest.helloConfiguration, timeout: 30)
    #expect(run.output.hasPrefix("Hello from a SwiftKVM guest"))
  }
}
