import CKVM
import Glibc

/// A file descriptor owned by exactly one object, closed when that object goes away.
public final class OwnedFileDescriptor: Sendable {
  /// The raw descriptor number.
  public let rawValue: Int32

  public init(_ rawValue: Int32) {
    self.rawValue = rawValue
  }

  deinit {
    close(rawValue)
  }

  /// Issues an ioctl with a pointer argument, throwing a `KVMError` named `operation` on failure.
  @inlinable
  @discardableResult
  public func ioctl(_ request: UInt, _ argument: UnsafeMutableRawPointer?, _ operation: String) throws(KVMError)
    -> Int32
  {
    let result = ckvm_ioctl(rawValue, request, argument)
    if result < 0 { throw KVMError(operation, errno: errno) }
    return result
  }

  /// Issues an ioctl with an integer argument.
  @inlinable
  @discardableResult
  public func ioctl(_ request: UInt, value: UInt, _ operation: String) throws(KVMError) -> Int32 {
    let result = ckvm_ioctl_value(rawValue, request, value)
    if result < 0 { throw KVMError(operation, errno: errno) }
    return result
  }

  /// Issues an ioctl whose argument is a value of type `T`, passed by address.
  @inlinable
  @discardableResult
  public func ioctl<T>(_ request: UInt, _ value: inout T, _ operation: String) throws(KVMError) -> Int32 {
    let result = withUnsafeMutablePointer(to: &value) { ckvm_ioctl(rawValue, request, $0) }
    if result < 0 { throw KVMError(operation, errno: errno) }
    return result
  }
}
