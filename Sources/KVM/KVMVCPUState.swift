import CKVM
import Glibc

/// Extended processor state (x87, SSE, AVX and beyond) in the XSAVE layout.
public typealias XSaveArea = [UInt8]
/// Extended control registers (XCR0).
public typealias ExtendedControlRegisters = kvm_xcrs
/// Debug registers DR0–DR3, DR6, DR7.
public typealias DebugRegisters = kvm_debugregs

/// The ioctls that read and write a vCPU's whole state, for snapshots: XSAVE, XCRs, debug
/// registers, and the MSRs KVM lists as its own to save.
extension KVMVCPU {
  /// `KVM_GET_XSAVE2` (as large as the host's XSAVE area, `xsaveSize` bytes) or, with
  /// `xsaveSize` 0, `KVM_GET_XSAVE` (4 KiB).
  public func xsave(size xsaveSize: Int) throws(KVMError) -> XSaveArea {
    let size = max(xsaveSize, MemoryLayout<kvm_xsave>.size)
    var area = [UInt8](repeating: 0, count: size)
    var failure: KVMError?
    area.withUnsafeMutableBytes { buffer in
      do throws(KVMError) {
        if xsaveSize > 0 {
          try fd.ioctl(CKVM_GET_XSAVE2, buffer.baseAddress, "KVM_GET_XSAVE2")
        } else {
          try fd.ioctl(CKVM_GET_XSAVE, buffer.baseAddress, "KVM_GET_XSAVE")
        }
      } catch { failure = error }
    }
    if let failure { throw failure }
    return area
  }

  /// `KVM_SET_XSAVE`: the area must be at least `kvm_xsave`'s 4 KiB (KVM reads as much as
  /// `KVM_CHECK_EXTENSION(KVM_CAP_XSAVE2)` says the host's area holds).
  public func setXSave(_ area: XSaveArea) throws(KVMError) {
    guard area.count >= MemoryLayout<kvm_xsave>.size else {
      throw KVMError("KVM_SET_XSAVE", errno: EINVAL, detail: "an XSAVE area of \(area.count) bytes is too short")
    }
    var copy = area
    var failure: KVMError?
    copy.withUnsafeMutableBytes { buffer in
      do throws(KVMError) { try fd.ioctl(CKVM_SET_XSAVE, buffer.baseAddress, "KVM_SET_XSAVE") } catch {
        failure = error
      }
    }
    if let failure { throw failure }
  }

  /// `KVM_GET_XCRS`.
  public func extendedControlRegisters() throws(KVMError) -> ExtendedControlRegisters {
    var value = ExtendedControlRegisters()
    try fd.ioctl(CKVM_GET_XCRS, &value, "KVM_GET_XCRS")
    return value
  }

  /// `KVM_SET_XCRS`.
  public func setExtendedControlRegisters(_ value: ExtendedControlRegisters) throws(KVMError) {
    var value = value
    try fd.ioctl(CKVM_SET_XCRS, &value, "KVM_SET_XCRS")
  }

  /// `KVM_GET_DEBUGREGS`.
  public func debugRegisters() throws(KVMError) -> DebugRegisters {
    var value = DebugRegisters()
    try fd.ioctl(CKVM_GET_DEBUGREGS, &value, "KVM_GET_DEBUGREGS")
    return value
  }

  /// `KVM_SET_DEBUGREGS`.
  public func setDebugRegisters(_ value: DebugRegisters) throws(KVMError) {
    var value = value
    try fd.ioctl(CKVM_SET_DEBUGREGS, &value, "KVM_SET_DEBUGREGS")
  }

  /// The values of every MSR in `indices` that KVM will read. `KVM_GET_MSRS` stops at the
  /// first MSR it cannot read; that one is skipped and the rest read on.
  public func readableMSRs(_ indices: [UInt32]) throws(KVMError) -> [MSREntry] {
    var result: [MSREntry] = []
    var remaining = indices[...]
    while !remaining.isEmpty {
      let batch = Array(remaining)
      let read = try msrs(batch)
      var taken = 0
      for index in batch {
        guard let value = read[index] else { break }
        result.append(MSREntry(index: index, value: value))
        taken += 1
      }
      remaining = remaining.dropFirst(taken + (taken < batch.count ? 1 : 0))
    }
    return result
  }

  /// `KVM_KVMCLOCK_CTRL`: tells a paravirtual guest it was paused, so its watchdogs do not
  /// count the pause as a lockup. False where the guest does not use kvmclock.
  @discardableResult
  public func notifyClockPaused() -> Bool {
    ckvm_ioctl_value(fd.rawValue, CKVM_KVMCLOCK_CTRL, 0) == 0
  }
}

/// The raw bytes of a KVM struct (a snapshot stores them as they are: KVM's ABI is stable).
public func kvmStructBytes<T>(_ value: T) -> [UInt8] {
  withUnsafeBytes(of: value) { Array($0) }
}

/// A KVM struct from its raw bytes, the bytes missing at the end left as in `zero` (a snapshot
/// stores structs without their trailing zeros); nil if there are more than `MemoryLayout<T>.size`.
public func kvmStruct<T>(_ type: T.Type, from bytes: [UInt8], zero: T) -> T? {
  guard bytes.count <= MemoryLayout<T>.size else { return nil }
  var value = zero
  withUnsafeMutableBytes(of: &value) { $0.copyBytes(from: bytes) }
  return value
}
