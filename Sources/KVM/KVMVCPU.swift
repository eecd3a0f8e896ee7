import CKVM
import Glibc

/// Register files as KVM defines them.
public typealias Registers = kvm_regs
/// Segment and control registers.
public typealias SpecialRegisters = kvm_sregs
/// One segment register.
public typealias Segment = kvm_segment
/// x87/SSE state.
public typealias FPUState = kvm_fpu
/// Pending exceptions, interrupts, NMIs and SIPIs.
public typealias VCPUEvents = kvm_vcpu_events

/// A virtual CPU: its file descriptor and the `kvm_run` area shared with the kernel.
///
/// All calls except `requestImmediateExit()` belong to the thread that runs the
/// vCPU; KVM serialises vCPU ioctls itself, so a call from another thread waits
/// until `KVM_RUN` returns. `requestImmediateExit()` is safe from any thread:
/// it is how another thread kicks this vCPU out of the guest.
public final class KVMVCPU: @unchecked Sendable {
  /// The APIC id this vCPU was created with.
  public let id: UInt32
  /// The vCPU file descriptor.
  public let fd: OwnedFileDescriptor
  /// The mmapped `struct kvm_run`.
  public let run: UnsafeMutablePointer<kvm_run>
  private let runSize: Int

  init(id: UInt32, fd: OwnedFileDescriptor, run: UnsafeMutableRawPointer, runSize: Int) {
    self.id = id
    self.fd = fd
    self.run = run.bindMemory(to: kvm_run.self, capacity: 1)
    self.runSize = runSize
  }

  deinit {
    munmap(run, runSize)
  }

  /// Enters the guest (`KVM_RUN`) until the next exit. Returns false when
  /// interrupted by a signal or `immediate_exit` (EINTR/EAGAIN), true on an exit.
  @inline(__always)
  public func enter() throws(KVMError) -> Bool {
    if ckvm_ioctl_value(fd.rawValue, CKVM_RUN, 0) == 0 { return true }
    let code = errno
    if code == EINTR || code == EAGAIN { return false }
    throw KVMError("KVM_RUN", errno: code, detail: "vCPU \(id)")
  }

  /// The reason for the last exit (`KVM_EXIT_*`).
  @inline(__always)
  public var exitReason: UInt32 { ckvm_exit_reason(run) }

  /// Asks KVM_RUN to return at once, now or on its next entry. Safe from any thread.
  public func requestImmediateExit() { ckvm_set_immediate_exit(run, 1) }

  /// Clears a previous `requestImmediateExit()`.
  public func clearImmediateExit() { ckvm_set_immediate_exit(run, 0) }

  // MARK: Registers

  public func registers() throws(KVMError) -> Registers {
    var value = Registers()
    try fd.ioctl(CKVM_GET_REGS, &value, "KVM_GET_REGS")
    return value
  }

  public func setRegisters(_ value: Registers) throws(KVMError) {
    var value = value
    try fd.ioctl(CKVM_SET_REGS, &value, "KVM_SET_REGS")
  }

  public func specialRegisters() throws(KVMError) -> SpecialRegisters {
    var value = SpecialRegisters()
    try fd.ioctl(CKVM_GET_SREGS, &value, "KVM_GET_SREGS")
    return value
  }

  public func setSpecialRegisters(_ value: SpecialRegisters) throws(KVMError) {
    var value = value
    try fd.ioctl(CKVM_SET_SREGS, &value, "KVM_SET_SREGS")
  }

  public func fpu() throws(KVMError) -> FPUState {
    var value = FPUState()
    try fd.ioctl(CKVM_GET_FPU, &value, "KVM_GET_FPU")
    return value
  }

  public func setFPU(_ value: FPUState) throws(KVMError) {
    var value = value
    try fd.ioctl(CKVM_SET_FPU, &value, "KVM_SET_FPU")
  }

  public func events() throws(KVMError) -> VCPUEvents {
    var value = VCPUEvents()
    try fd.ioctl(CKVM_GET_VCPU_EVENTS, &value, "KVM_GET_VCPU_EVENTS")
    return value
  }

  public func setEvents(_ value: VCPUEvents) throws(KVMError) {
    var value = value
    try fd.ioctl(CKVM_SET_VCPU_EVENTS, &value, "KVM_SET_VCPU_EVENTS")
  }

  /// `KVM_GET_MP_STATE`: runnable, halted, waiting for SIPI, …
  public func mpState() throws(KVMError) -> UInt32 {
    var value = kvm_mp_state()
    try fd.ioctl(CKVM_GET_MP_STATE, &value, "KVM_GET_MP_STATE")
    return value.mp_state
  }

  public func setMPState(_ state: UInt32) throws(KVMError) {
    var value = kvm_mp_state(mp_state: state)
    try fd.ioctl(CKVM_SET_MP_STATE, &value, "KVM_SET_MP_STATE")
  }

  /// `KVM_TRANSLATE`: the guest-physical address of guest-virtual `address`, if mapped.
  public func translate(_ address: UInt64) throws(KVMError) -> UInt64? {
    var value = kvm_translation()
    value.linear_address = address
    try fd.ioctl(CKVM_TRANSLATE, &value, "KVM_TRANSLATE")
    return value.valid != 0 ? value.physical_address : nil
  }

  /// `KVM_GET_LAPIC`: the in-kernel local APIC's 1 KiB register page.
  public func localAPIC() throws(KVMError) -> [UInt8] {
    var state = kvm_lapic_state()
    try fd.ioctl(CKVM_GET_LAPIC, &state, "KVM_GET_LAPIC")
    return withUnsafeBytes(of: &state.regs) { Array($0) }
  }

  /// `KVM_SET_LAPIC`.
  public func setLocalAPIC(_ registers: [UInt8]) throws(KVMError) {
    var state = kvm_lapic_state()
    withUnsafeMutableBytes(of: &state.regs) { target in
      for (index, byte) in registers.prefix(target.count).enumerated() { target[index] = byte }
    }
    try fd.ioctl(CKVM_SET_LAPIC, &state, "KVM_SET_LAPIC")
  }

  // MARK: CPUID and MSRs

  /// `KVM_SET_CPUID2`: what the guest's CPUID instruction returns.
  public func setCPUID(_ table: CPUIDTable) throws(KVMError) {
    let buffer = CPUIDTable.RawBuffer(table)
    try fd.ioctl(CKVM_SET_CPUID2, buffer.pointer, "KVM_SET_CPUID2")
  }

  /// `KVM_GET_MSRS` for `indices`; MSRs KVM does not know are left out of the result.
  public func msrs(_ indices: [UInt32]) throws(KVMError) -> [UInt32: UInt64] {
    let entries = indices.map { MSREntry(index: $0, value: 0) }
    let (count, read) = try transferMSRs(entries, request: CKVM_GET_MSRS, name: "KVM_GET_MSRS")
    var result: [UInt32: UInt64] = [:]
    for entry in read.prefix(count) { result[entry.index] = entry.value }
    return result
  }

  /// `KVM_SET_MSRS`; throws when KVM refuses any of them, naming the first one refused.
  public func setMSRs(_ values: [MSREntry]) throws(KVMError) {
    let (count, _) = try transferMSRs(values, request: CKVM_SET_MSRS, name: "KVM_SET_MSRS")
    if count < values.count {
      throw KVMError(
        "KVM_SET_MSRS", errno: EINVAL,
        detail: "MSR 0x\(String(values[count].index, radix: 16)) refused")
    }
  }

  private func transferMSRs(_ values: [MSREntry], request: UInt, name: String) throws(KVMError) -> (
    Int, [MSREntry]
  ) {
    let size = CKVM_MSRS_HEADER_SIZE + values.count * MemoryLayout<kvm_msr_entry>.stride
    let raw = UnsafeMutableRawPointer.allocate(byteCount: size, alignment: 8)
    defer { raw.deallocate() }
    raw.initializeMemory(as: UInt8.self, repeating: 0, count: size)
    raw.bindMemory(to: kvm_msrs.self, capacity: 1).pointee.nmsrs = UInt32(values.count)
    let entries = (raw + CKVM_MSRS_HEADER_SIZE).bindMemory(to: kvm_msr_entry.self, capacity: values.count)
    for (position, value) in values.enumerated() {
      entries[position].index = value.index
      entries[position].data = value.value
    }
    let count = Int(try fd.ioctl(request, raw, name))
    return (count, (0..<values.count).map { MSREntry(index: entries[$0].index, value: entries[$0].data) })
  }
}

/// A model-specific register and its value.
public struct MSREntry: Sendable, Hashable, Codable {
  public var index: UInt32
  public var value: UInt64

  public init(index: UInt32, value: UInt64) {
    self.index = index
    self.value = value
  }
}
