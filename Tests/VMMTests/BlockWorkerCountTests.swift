import Glibc
import Testing

@testable import VMM

@Suite("Block worker threads")
struct BlockWorkerCountTests {
  @Test(
    "Up to four per disk, no more than the CPUs the vCPUs leave free, at least one per disk",
    arguments: [
      (1, 1, 2, 1),  // this development host: one free CPU
      (1, 1, 16, 4),  // a big host: four per disk
      (2, 4, 4, 2),  // every CPU is a vCPU: one per disk still
      (2, 2, 8, 6),
      (8, 1, 64, 16),  // never more than sixteen in all
    ])
  func workerCount(disks: Int, vCPUs: Int, cpus: Int, expected: Int) {
    #expect(PCIDevices.workerCount(disks: disks, vCPUs: vCPUs, usableCPUs: cpus) == expected)
  }

  @Test("This process may run on at least one CPU, and no more than are online")
  func usableCPUs() {
    let count = PCIDevices.usableCPUCount()
    #expect(count >= 1)
    #expect(count <= sysconf(Int32(_SC_NPROCESSORS_CONF)))
  }
}
