import CKVM
import Glibc
import Testing

@testable import KVM

@Suite("KVM system")
struct KVMSystemTests {
  @Test("Opens /dev/kvm, reports API 12, capabilities, CPUID and MSRs")
  func opensAndQueries() throws {
    let system = try KVMSystem()
    #expect(system.checkExtension(KVM_CAP_USER_MEMORY) > 0)
    #expect(system.checkExtension(KVM_CAP_IRQCHIP) > 0)
    #expect(try system.vcpuMmapSize() >= 4096)
    #expect(system.maximumVCPUs >= 1)
    let cpuid = try system.supportedCPUID()
    #expect(cpuid[0] != nil, "leaf 0 (vendor) must be supported")
    #expect(cpuid[0x8000_0001].map { $0.edx & (1 << 29) != 0 } == true, "long mode must be supported")
    let msrs = try system.msrIndexList()
    #expect(msrs.contains(0xC000_0081), "STAR must be in the MSR list (EFER travels in sregs)")
  }

  @Test("A missing device gives one actionable sentence")
  func missingDevice() {
    #expect(throws: KVMUnavailableError.self) { try KVMSystem(path: "/nonexistent/kvm") }
    do {
      _ = try KVMSystem(path: "/nonexistent/kvm")
    } catch {
      #expect(error.description.contains("/nonexistent/kvm is not accessible"))
      #expect(error.description.contains("modprobe"))
    }
  }

  @Test("A device without permission says how to get it")
  func permissionMessage() {
    let error = KVMUnavailableError(path: "/dev/kvm", code: EACCES, apiVersion: nil)
    #expect(error.description.contains("Permission denied"))
    #expect(error.description.contains("kvm"))
  }

  @Test("A VM gets memory slots, an irqchip, a PIT, vCPUs and registers round-trip")
  func virtualMachineBasics() throws {
    let system = try KVMSystem()
    let vm = try system.createVirtualMachine()
    let page = UnsafeMutableRawPointer.allocate(byteCount: 0x10000, alignment: 4096)
    defer { page.deallocate() }
    try vm.setMemorySlot(0, guestAddress: 0, size: 0x10000, host: page)
    try vm.createInterruptController()
    try vm.createPIT()
    try vm.setGSIRouting([.irqchip(gsi: 4, chip: 2, pin: 4)])
    let vcpu = try vm.createVCPU(id: 0)
    var registers = try vcpu.registers()
    registers.rax = 0x1234_5678_9ABC
    registers.rip = 0x42
    try vcpu.setRegisters(registers)
    let back = try vcpu.registers()
    #expect(back.rax == 0x1234_5678_9ABC && back.rip == 0x42)
    try vcpu.setMSRs([MSREntry(index: 0x174, value: 0x10)])  // IA32_SYSENTER_CS
    #expect(try vcpu.msrs([0x174])[0x174] == 0x10)
    #expect(throws: KVMError.self) { try vm.setMemorySlot(0, guestAddress: 0x1001, size: 0x1000, host: page) }
  }

  @Test("Errors carry the ioctl name and errno text")
  func errorDescription() {
    let error = KVMError("KVM_CREATE_VM", errno: EINVAL, detail: "slot 3")
    #expect(error.description == "KVM_CREATE_VM failed (slot 3): Invalid argument [errno 22]")
  }
}

@Suite("Host KVM kind")
struct HostKVMKindTests {
  static let modules: [(String, HostKVMKind)] = [("kvm_pvm", .pvm), ("kvm_intel", .vmx), ("kvm_amd", .svm)]

  @Test("Detected from /sys/module", arguments: modules)
  func detection(module: String, expected: HostKVMKind) throws {
    let root = "/tmp/skvm-sysmodule-\(getpid())-\(module)"
    mkdir(root, 0o755)
    mkdir("\(root)/\(module)", 0o755)
    defer {
      rmdir("\(root)/\(module)")
      rmdir(root)
    }
    #expect(HostKVMKind.detect(sysModule: root) == expected)
    #expect(HostKVMKind.detect(sysModule: "/nonexistent") == .unknown)
    #expect(expected.runsStockLinuxUserspace == (expected != .pvm))
  }
}

@Suite("CPUID table")
struct CPUIDTableTests {
  @Test("Subscript finds plain and indexed leaves; update touches every sub-leaf")
  func lookup() {
    let indexed = UInt32(KVM_CPUID_FLAG_SIGNIFCANT_INDEX)
    var table = CPUIDTable(entries: [
      CPUIDEntry(function: 1, eax: 1, ebx: 0, ecx: 0, edx: 0),
      CPUIDEntry(function: 0xB, index: 0, flags: indexed, eax: 0, ebx: 0, ecx: 0, edx: 0),
      CPUIDEntry(function: 0xB, index: 1, flags: indexed, eax: 0, ebx: 0, ecx: 1, edx: 0),
    ])
    #expect(table[1]?.eax == 1)
    #expect(table[1, 7]?.eax == 1, "a non-indexed leaf ignores the index")
    #expect(table[0xB, 1]?.ecx == 1)
    #expect(table[0xB, 2] == nil)
    table.update(function: 0xB) { $0.edx = 9 }
    #expect(table.entries.filter { $0.function == 0xB }.allSatisfy { $0.edx == 9 })
    table[5] = CPUIDEntry(function: 5, eax: 5, ebx: 0, ecx: 0, edx: 0)
    #expect(table[5]?.eax == 5)
    table[5] = nil
    #expect(table[5] == nil)
  }
}
