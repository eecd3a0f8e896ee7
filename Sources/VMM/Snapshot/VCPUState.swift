import CKVM
import Devices
import KVM

/// One vCPU's whole architectural state as KVM gives it: general and special registers,
/// XSAVE (x87, SSE, AVX and beyond), XCR0, debug registers, the local APIC, the MSRs KVM
/// lists as saveable, pending events and the run state. KVM structs are kept as their raw
/// bytes (KVM's ABI is stable) without their trailing zeros (the XSAVE area is mostly zeros);
/// restoring pads them back and checks every length.
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
    func trimmed(_ bytes: [UInt8]) -> Base64Bytes { Base64Bytes(trimmingTrailingZeros: bytes) }
    return VCPUState(
      id: vcpu.id, mpState: try vcpu.mpState(), registers: trimmed(kvmStructBytes(try vcpu.registers())),
      specialRegisters: trimmed(kvmStructBytes(try vcpu.specialRegisters())),
      xsave: trimmed(try vcpu.xsave(size: xsaveSize)),
      extendedControlRegisters: (try? vcpu.extendedControlRegisters()).map { trimmed(kvmStructBytes($0)) },
      debugRegisters: trimmed(kvmStructBytes(try vcpu.debugRegisters())),
      localAPIC: trimmed(try vcpu.localAPIC()), msrs: try vcpu.readableMSRs(msrIndices),
      events: trimmed(kvmStructBytes(try vcpu.events())))
  }

  /// Writes the state into a freshly created vCPU, in the order KVM needs: run state, registers,
  /// special registers, XSAVE, XCRs, debug registers, local APIC, MSRs (the TSC before the
  /// TSC deadline, or the deadline lands in the wrong epoch and the guest's timers stall),
  /// and pending events last. `xsaveSize` is this host's `KVM_CAP_XSAVE2` (0: 4 KiB): KVM
  /// reads an area of that size, so the saved one is padded to it.
  func restore(into vcpu: KVMVCPU, xsaveSize: Int) throws(VirtualMachineError) {
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
    guard let apic = localAPIC.padded(to: MemoryLayout<kvm_lapic_state>.size) else {
      throw .snapshot("vCPU \(id): the local APIC state has \(localAPIC.bytes.count) bytes")
    }
    let areaSize = max(xsaveSize, MemoryLayout<kvm_xsave>.size)
    guard let area = xsave.padded(to: areaSize) else {
      throw .snapshot(
        "vCPU \(id): the saved XSAVE area holds \(xsave.bytes.count) bytes of state and this host's KVM only \(areaSize) (the saving host's CPU had features this one lacks)"
      )
    }
    let ordered =
      msrs.filter { $0.index == Self.tsc } + msrs.filter { $0.index != Self.tsc && $0.index != Self.tscDeadline }
      + msrs.filter { $0.index == Self.tscDeadline }
    do {
      try vcpu.setMPState(mpState)
      try vcpu.setRegisters(registers)
      try vcpu.setSpecialRegisters(special)
      try vcpu.setXSave(area)
      if let xcrs { try vcpu.setExtendedControlRegisters(xcrs) }
      try vcpu.setDebugRegisters(debug)
      try vcpu.setLocalAPIC(apic)
      try vcpu.setMSRs(ordered)
      try vcpu.setEvents(pending)
    } catch {
      throw .snapshot("vCPU \(id): KVM refused the saved state: \(error)")
    }
  }
}
