import CKVM
import KVM
import Testing

@testable import GuestMemory

@Suite("Dirty page log")
struct DirtyLogTests {
  @Test("Pages the guest writes show up once in the dirty log")
  func guestWritesAreLogged() throws {
    let system = try KVMSystem()
    let vm = try system.createVirtualMachine()
    let memory = try GuestMemory(ranges: [(0, 1 << 20)])
    try memory.map(into: vm, logDirtyPages: true)
    // Real mode at 0:0x1000 — mov byte [0x3000], 1; hlt  (no irqchip, so hlt exits to us)
    try memory.write([0xC6, 0x06, 0x00, 0x30, 0x01, 0xF4], to: 0x1000)
    _ = try memory.dirtyPages(in: vm)  // clear what the host's own writes did
    let vcpu = try vm.createVCPU(id: 0)
    var special = try vcpu.specialRegisters()
    special.cs.base = 0
    special.cs.selector = 0
    try vcpu.setSpecialRegisters(special)
    var registers = try vcpu.registers()
    registers.rip = 0x1000
    registers.rflags = 2
    try vcpu.setRegisters(registers)
    var exits = 0
    while exits < 100 {
      exits += 1
      if try vcpu.enter(), vcpu.exitReason == UInt32(KVM_EXIT_HLT) { break }
    }
    #expect(vcpu.exitReason == UInt32(KVM_EXIT_HLT))
    #expect(try memory.load(UInt8.self, at: 0x3000) == 1)
    let dirty = try memory.dirtyPages(in: vm)
    #expect(dirty.contains(0x3000), "dirty pages: \(dirty)")
    #expect(try memory.dirtyPages(in: vm).isEmpty, "reading the log resets it")
  }
}

/// The VMM's own writes into guest RAM (device DMA), which KVM's dirty log cannot see.
@Suite("Write log")
struct WriteLogTests {
  @Test("While logging, writes through write/store/bufferForWriting mark their pages; reads and plain buffers do not")
  func logsWrites() throws {
    let memory = try GuestMemory(ranges: [(0, 1 << 20), (4 << 20, 1 << 20)])
    try memory.write([1, 2, 3], to: 0x1000)
    #expect(memory.takeWrittenPages().isEmpty, "nothing is noted before logging starts")
    memory.startLoggingWrites()
    try memory.write([1, 2, 3], to: 0x2FFF)  // crosses into the next page
    try memory.store(UInt32(7), at: (4 << 20) + 0x5000)
    _ = try memory.bufferForWriting(at: 0x9000, length: 4096)
    _ = try memory.bytes(at: 0x20000, length: 4096)
    _ = try memory.buffer(at: 0x30000, length: 16)
    #expect(memory.takeWrittenPages().sorted() == [0x2000, 0x3000, 0x9000, (4 << 20) + 0x5000])
    #expect(memory.takeWrittenPages().isEmpty, "taking clears them")
    memory.stopLoggingWrites()
    try memory.write([9], to: 0x4000)
    #expect(memory.takeWrittenPages().isEmpty, "nothing is noted after logging stops")
  }

  @Test(
    "A device write that a migration pass takes half-way (noted at the handout, the bytes not in yet) is noted again when it finishes, so the next pass sends the page again"
  )
  func writeTakenHalfWayIsNotedAgain() throws {
    let memory = try GuestMemory(ranges: [(0, 1 << 20)])
    memory.startLoggingWrites()
    let target = try memory.bufferForWriting(at: 0x7000, length: 4096)
    #expect(memory.takeWrittenPages() == [0x7000], "a pass runs while the device still fills the buffer")
    target.initializeMemory(as: UInt8.self, repeating: 0xAB)
    memory.finishedWriting(at: 0x7000, length: 4096)
    #expect(memory.takeWrittenPages() == [0x7000], "the finished write shows in the next pass")
    #expect(memory.takeWrittenPages().isEmpty)
  }
}
