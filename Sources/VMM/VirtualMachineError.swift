import Devices
import GuestMemory
import KVM
import Machine

/// Why a virtual machine could not be created or started. Each case reads as a sentence
/// that says what was wrong, with the value, and what to do.
public enum VirtualMachineError: Error, CustomStringConvertible {
  case kvmUnavailable(KVMUnavailableError)
  case invalidMemorySize(UInt64, reason: String)
  case invalidCPUCount(Int, maximum: Int)
  case imageUnreadable(path: String, reason: String)
  case imageEmpty(path: String)
  case imageTooLarge(path: String, size: UInt64, available: UInt64)
  case kvm(KVMError)
  case memoryAllocation(GuestMemoryAllocationError)
  case boot(BootError)
  case linux(LinuxBootError)
  /// The BIOS image (`--bios`) cannot be used.
  case firmware(FirmwareError)
  case device(IOBusError)
  case disk(path: String, reason: String)
  case debugConsole(path: String, reason: String)
  /// The console socket (`--console-socket`) could not be opened.
  case consoleSocket(path: String, reason: String)
  case cdrom(path: String, reason: String)
  /// NIC `index` (0 for the first `--net`) could not be set up.
  case network(index: Int, reason: String)
  case deviceRegistry(DeviceRegistryError)
  /// A snapshot could not be taken or restored (the file, what differs, what to do).
  case snapshot(String)
  /// A live migration could not go on (what happened, on which side).
  case migration(String)
  case alreadyStarted

  public var description: String {
    switch self {
    case .kvmUnavailable(let error): error.description
    case .invalidMemorySize(let size, let reason): "invalid guest memory size \(size) bytes: \(reason)"
    case .invalidCPUCount(let count, let maximum):
      "invalid vCPU count \(count): it must be between 1 and \(maximum) on this host"
    case .imageUnreadable(let path, let reason): "cannot read guest image '\(path)': \(reason)"
    case .imageEmpty(let path): "guest image '\(path)' is empty"
    case .imageTooLarge(let path, let size, let available):
      "guest image '\(path)' is \(size) bytes, but only \(available) bytes of guest RAM lie above its load address; raise --memory"
    case .disk(let path, let reason): "disk '\(path)': \(reason)"
    case .consoleSocket(let path, let reason): "cannot offer the console on \(path): \(reason)"
    case .debugConsole(let path, let reason): "--debugcon '\(path)': \(reason)"
    case .cdrom(let path, let reason): "--cdrom '\(path)': \(reason)"
    case .network(let index, let reason): "network \(index) (--net): \(reason)"
    case .kvm(let error): error.description
    case .memoryAllocation(let error): error.description
    case .boot(let error): error.description
    case .linux(let error): error.description
    case .firmware(let error): "--bios: \(error)"
    case .device(let error): error.description
    case .deviceRegistry(let error): error.description
    case .snapshot(let reason): reason
    case .migration(let reason): "migration: \(reason)"
    case .alreadyStarted: "this virtual machine has already been started; create a new one"
    }
  }
}
