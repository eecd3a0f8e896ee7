import Synchronization

/// A PCI function the bus can address: its configuration space and what its BARs decode.
public protocol PCIFunction: AnyObject, Sendable {
  /// A short name for messages and `info qtree`.
  var name: String { get }
  /// Reads configuration space.
  func configRead(_ offset: Int, width: Int) -> UInt32
  /// Writes configuration space (BAR moves are the bus owner's to notice).
  func configWrite(_ offset: Int, width: Int, value: UInt32)
  /// A copy of the whole configuration space as it is now (for the monitor, later snapshots).
  var configSpace: PCIConfigSpace { get }
}

/// PCI bus 0: up to 32 devices (function 0 each), reached through the legacy 0xCF8/0xCFC
/// mechanism and ECAM (`PCIConfigPorts`, `PCIExpressECAM`). Empty slots read all ones.
public final class PCIBus: Sendable {
  private let slots = Mutex<[Int: any PCIFunction]>([:])

  public init() {}

  /// Puts `function` at device number `device` (0–31).
  public func attach(_ function: any PCIFunction, device: Int) throws(PCIBusError) {
    guard (0..<32).contains(device) else { throw .noSuchSlot(device) }
    try slots.withLock { slots throws(PCIBusError) in
      guard slots[device] == nil else { throw .slotTaken(device) }
      slots[device] = function
    }
  }

  /// The function at `device`, if any.
  public func function(at device: Int) -> (any PCIFunction)? { slots.withLock { $0[device] } }

  /// Every attached function by device number.
  public var attached: [(device: Int, function: any PCIFunction)] {
    slots.withLock { $0.sorted { $0.key < $1.key }.map { ($0.key, $0.value) } }
  }

  /// Configuration read for bus/device/function/register; all ones where nothing answers.
  public func read(bus: Int, device: Int, function: Int, offset: Int, width: Int) -> UInt32 {
    guard bus == 0, function == 0, let target = self.function(at: device) else {
      return UInt32.max >> (32 - 8 * UInt32(min(width, 4)))
    }
    return target.configRead(offset, width: width)
  }

  public func write(bus: Int, device: Int, function: Int, offset: Int, width: Int, value: UInt32) {
    guard bus == 0, function == 0, let target = self.function(at: device) else { return }
    target.configWrite(offset, width: width, value: value)
  }
}

/// A slot could not be used.
public enum PCIBusError: Error, Equatable, CustomStringConvertible {
  case noSuchSlot(Int)
  case slotTaken(Int)

  public var description: String {
    switch self {
    case .noSuchSlot(let device): "PCI device number \(device) is outside 0–31"
    case .slotTaken(let device): "PCI slot \(device) is already in use"
    }
  }
}
