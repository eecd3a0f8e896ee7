import Glibc

/// A failed KVM call: which operation, and the errno the kernel returned.
public struct KVMError: Error, Equatable, CustomStringConvertible {
  /// The ioctl or system call that failed, e.g. `KVM_CREATE_VM`.
  public let operation: String
  /// The errno value.
  public let code: Int32
  /// Extra context, e.g. the slot or address involved.
  public let detail: String

  public init(_ operation: String, errno code: Int32, detail: String = "") {
    self.operation = operation
    self.code = code
    self.detail = detail
  }

  /// The human name of the errno value (`EINVAL`'s text, for example).
  public var errnoText: String { String(cString: strerror(code)) }

  public var description: String {
    let context = detail.isEmpty ? "" : " (\(detail))"
    return "\(operation) failed\(context): \(errnoText) [errno \(code)]"
  }
}

/// Why `/dev/kvm` could not be used, phrased for the person at the terminal.
public struct KVMUnavailableError: Error, CustomStringConvertible {
  public let path: String
  public let code: Int32
  public let apiVersion: Int32?

  public var description: String {
    if let apiVersion {
      return "\(path) reports KVM API version \(apiVersion); SwiftKVM needs version 12 (every Linux since 2.6.22)."
    }
    let reason = String(cString: strerror(code))
    switch code {
    case ENOENT:
      return
        "\(path) is not accessible: \(reason). Load the KVM module (modprobe kvm_intel or kvm_amd) and check that virtualization is enabled in the firmware."
    case EACCES, EPERM:
      return
        "\(path) is not accessible: \(reason). Add your user to the group that owns it (usually 'kvm'), or run as root."
    default:
      return "\(path) is not accessible: \(reason)."
    }
  }
}

/// Runs `body` until it does not fail with EINTR.
@inline(__always)
func retryingOnInterrupt(_ body: () -> Int32) -> Int32 {
  while true {
    let result = body()
    if result >= 0 || errno != EINTR { return result }
  }
}
