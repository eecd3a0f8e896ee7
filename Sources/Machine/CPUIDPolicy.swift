import KVM

/// Derives the CPUID table each vCPU sees from what the host supports.
public struct CPUIDPolicy: Sendable {
  /// What `KVM_GET_SUPPORTED_CPUID` reported.
  public let supported: CPUIDTable
  /// How many vCPUs the guest has.
  public let cpuCount: Int

  public init(supported: CPUIDTable, cpuCount: Int) {
    self.supported = supported
    self.cpuCount = cpuCount
  }

  /// The table for the vCPU with APIC id `apicID`: the host's leaves, with this vCPU's
  /// APIC id in leaf 1 (initial APIC id), 0xB and 0x1F (x2APIC id), the logical count,
  /// and the hypervisor bit, without which a guest never looks at KVM's leaves
  /// (0x40000000: kvm-clock, PV EOI, …). KVM's supported table does not set it.
  public func table(forAPICID apicID: UInt32) -> CPUIDTable {
    var table = supported
    table.update(function: 1) { entry in
      entry.ebx = (entry.ebx & 0x0000_FFFF) | (apicID & 0xFF) << 24 | UInt32(min(cpuCount, 255)) << 16
      if cpuCount > 1 { entry.edx |= 1 << 28 }  // HTT: the logical-count field is valid
      entry.ecx |= 1 << 31  // hypervisor present
    }
    for leaf: UInt32 in [0xB, 0x1F] {
      table.update(function: leaf) { entry in entry.edx = apicID }
    }
    return table
  }
}
