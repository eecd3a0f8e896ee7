import CKVM
import Devices
import KVM

/// One vCPU's whole architectural state as KVM gives it: general and special registers,
/// XSAVE (x87, SSE, AVX and beyond), XCR0, debug registers, the local APIC, the MSRs KVM
/// lists as saveable, pending events and the run state. KVM structs are kept as their raw
/// bytes (KVM's ABI is stable); restoring checks every length.
public struct VCPUState: Codable, Sendable, Equatable {
  public var id: UInt32
  public var mpState: UInt32
  public var registers: Base64Bytes
  public var specialRegisters: Base64Bytes
  public var xsave: Base64Bytes
  /// Nil where the host has no XSAVE (KVM_GET_XCRS refused).
  public var extendedControlRegisters: Base64Bytes?
  public var debugRegisters: Base64Bytes
  public var localAPIC: Base64Bytes
  public var msrs: [MSREntry]
  public var events: Base64Bytes

  static let tsc: UInt32 = 0x10
  static let tscDeadline: UInt32 = 0x6E0

  /// Reads the state of a parked vCPU (its pending I/O completed). `msrIndices` is the host's
  /// `KVM_GET_MSR_INDEX_LIST`; `xsaveSize` what `KVM_CAP_XSAVE2` reports (0: 4 KiB).
  static func capture(_ vcpu: KVMVCPU, msrIndices: [UInt32], xsaveSize: Int) throws(KVMError) -> VCPUState {
    VCPUState(
      id: vcpu.id, mpState: try vcpu.mpState(), registers: Base64Bytes(kvmStructBytes(try vcpu.registers())),
      specialRegisters: Base64Bytes(kvmStructBytes(try vcpu.specialRegisters())),
      xsave: Base64Bytes(try vcpu.xsave(size: xsaveSize)),
      extendedControlRegisters: (try? vcpu.extendedControlRegisters()).map { Base64Bytes(kvmStructBytes($0)) },
      debugRegisters: Base64Bytes(kvmStructBytes(try vcpu.debugRegisters())),
      localAPIC: Base64Bytes(try vcpu.localAPIC()), msrs: try vcpu.readableMSRs(msrIndices),
      events: Base64Bytes(kvmStructBytes(try vcpu.events())))
  }

  /// Writes the state into a freshly created vCPU, in the order KVM needs: run state, registers,
  /// special registers, XSAVE, XCRs, debug registers, local APIC, MSRs (the TSC before the
  /// TSC deadline, or the deadline lands in the wrong epoch and the guest's timers stall),
  /// and pending events last.
  func restore(into vcpu: KVMVCPU) throws(VirtualMachineError) {
    func field<T>(_ saved: Base64Bytes, _ zero: T, _ name: String) throws(VirtualMachineError) -> T {
      guard let value = kvmStruct(T.self, from: saved.bytes, zero: zero) else {
        throw .snapshot("vCPU \(id): \(name) has \(saved.bytes.count) bytes, not \(MemoryLayout<T>.size)")
      }
      return value
    }
    let registers = try field(self.registers, Registers(), "the registers")
    let special = try field(specialRegisters, SpecialRegisters(), "the special registers")
    let debug = try field(debugRegisters, DebugRegisters(), "the debug registers")
    let pending = try field(events, VCPUEvents(), "the events")
    let xcrs = try extendedControlRegisters.map { (bytes) throws(VirtualMachineError) in
      try field(bytes, ExtendedControlRegisters(), "the XCRs")
    }
    guard localAPIC.bytes.count == MemoryLayout<kvm_lapic_state>.size else {
      throw .snapshot("vCPU \(id): the local APIC state has \(localAPIC.bytes.count) bytes")
    }
    let ordered =
      msrs.filter { $0.index == Self.tsc } + msrs.filter { $0.index != Self.tsc && $0.index != Self.tscDeadline }
      + msrs.filter { $0.index == Self.tscDeadline }
    do {
      try vcpu.setMPState(mpState)
      try vcpu.setRegisters(registers)
      try vcpu.setSpecialRegisters(special)
      try vcpu.setXSave(xsave.bytes)
      if let xcrs { try vcpu.setExtendedControlRegisters(xcrs) }
      try vcpu.setDebugRegisters(debug)
      try vcpu.setLocalAPIC(localAPIC.bytes)
      try vcpu.setMSRs(ordered)
      try vcpu.setEvents(pending)
    } catch {
      throw .snapshot("vCPU \(id): KVM refused the saved state: \(error)")
    }
  }
}
