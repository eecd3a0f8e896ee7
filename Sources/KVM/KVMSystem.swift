import CKVM
import Glibc

/// The host's KVM subsystem: an open `/dev/kvm`.
///
/// Everything a VMM asks of the system as a whole lives here: the API
/// version, capabilities, what CPUID and MSRs the host can back, and the
/// size of each vCPU's shared `kvm_run` area.
public final class KVMSystem: Sendable {
  /// The API version every KVM since Linux 2.6.22 reports.
  public static let requiredAPIVersion: Int32 = 12

  /// The open `/dev/kvm`.
  public let fd: OwnedFileDescriptor
  /// The path that was opened.
  public let path: String

  /// Opens the KVM device and checks its API version.
  public init(path: String = "/dev/kvm") throws(KVMUnavailableError) {
    let raw = open(path, O_RDWR | O_CLOEXEC)
    if raw < 0 { throw KVMUnavailableError(path: path, code: errno, apiVersion: nil) }
    fd = OwnedFileDescriptor(raw)
    self.path = path
    let version = ckvm_ioctl_value(raw, CKVM_GET_API_VERSION, 0)
    if version != Self.requiredAPIVersion {
      throw KVMUnavailableError(path: path, code: version < 0 ? errno : 0, apiVersion: version)
    }
  }

  /// `KVM_CHECK_EXTENSION`: 0 when the capability is absent, else a capability-specific value.
  public func checkExtension(_ capability: Int32) -> Int32 {
    max(0, ckvm_ioctl_value(fd.rawValue, CKVM_CHECK_EXTENSION, UInt(capability)))
  }

  /// The size of the `kvm_run` area to mmap from each vCPU fd.
  public func vcpuMmapSize() throws(KVMError) -> Int {
    Int(try fd.ioctl(CKVM_GET_VCPU_MMAP_SIZE, value: 0, "KVM_GET_VCPU_MMAP_SIZE"))
  }

  /// The largest number of vCPUs a VM may have (`KVM_CAP_MAX_VCPUS`, falling back to the recommended count).
  public var maximumVCPUs: Int {
    let maximum = checkExtension(KVM_CAP_MAX_VCPUS)
    if maximum > 0 { return Int(maximum) }
    let recommended = checkExtension(KVM_CAP_NR_VCPUS)
    return recommended > 0 ? Int(recommended) : 4
  }

  /// `KVM_GET_SUPPORTED_CPUID`: every CPUID leaf the host can back.
  public func supportedCPUID() throws(KVMError) -> CPUIDTable {
    var capacity = 128
    while true {
      let buffer = CPUIDTable.RawBuffer(capacity: capacity)
      let result = ckvm_ioctl(fd.rawValue, CKVM_GET_SUPPORTED_CPUID, buffer.pointer)
      if result >= 0 { return buffer.table() }
      if errno != E2BIG || capacity >= 4096 { throw KVMError("KVM_GET_SUPPORTED_CPUID", errno: errno) }
      capacity *= 2
    }
  }

  /// `KVM_GET_MSR_INDEX_LIST`: the MSRs KVM saves and restores for a vCPU.
  public func msrIndexList() throws(KVMError) -> [UInt32] {
    var capacity = 256
    while true {
      let size = CKVM_MSR_LIST_HEADER_SIZE + capacity * MemoryLayout<UInt32>.stride
      let raw = UnsafeMutableRawPointer.allocate(byteCount: size, alignment: 8)
      defer { raw.deallocate() }
      let list = raw.bindMemory(to: kvm_msr_list.self, capacity: 1)
      list.pointee.nmsrs = UInt32(capacity)
      if ckvm_ioctl(fd.rawValue, CKVM_GET_MSR_INDEX_LIST, raw) >= 0 {
        let count = Int(list.pointee.nmsrs)
        let indices = (raw + CKVM_MSR_LIST_HEADER_SIZE).bindMemory(to: UInt32.self, capacity: count)
        return Array(UnsafeBufferPointer(start: indices, count: count))
      }
      if errno != E2BIG || capacity >= 16384 { throw KVMError("KVM_GET_MSR_INDEX_LIST", errno: errno) }
      capacity = max(capacity * 2, Int(list.pointee.nmsrs))
    }
  }

  /// Creates a virtual machine (`KVM_CREATE_VM`, default machine type).
  public func createVirtualMachine() throws(KVMError) -> KVMVirtualMachine {
    let raw = retryingOnInterrupt { ckvm_ioctl_value(fd.rawValue, CKVM_CREATE_VM, 0) }
    if raw < 0 { throw KVMError("KVM_CREATE_VM", errno: errno) }
    return KVMVirtualMachine(fd: OwnedFileDescriptor(raw), system: self)
  }
}
