import Foundation
import Testing

@testable import Devices

/// A test function with one BAR of each kind.
final class BARFunction: PCIFunction, @unchecked Sendable {
  let name = "bar-test"
  var space = PCIConfigSpace(vendor: 0x1AF4, device: 0x1042, classCode: 0x01_8000, interruptPin: 1)

  init() {
    space.setBAR(0, .init(kind: .memory64, size: 0x4000, prefetchable: true))
    space.setBAR(2, .init(kind: .io, size: 0x40))
    space.setBAR(3, .init(kind: .memory32, size: 0x1000))
  }

  func configRead(_ offset: Int, width: Int) -> UInt32 { space.read(offset, width: width) }
  func configWrite(_ offset: Int, width: Int, value: UInt32) { space.write(offset, width: width, value: value) }
  var configSpace: PCIConfigSpace { space }
}

@Suite("PCI configuration space")
struct PCITests {
  static func bus() throws -> (PCIBus, PCIConfigPorts, PCIExpressECAM, BARFunction) {
    let bus = PCIBus()
    try bus.attach(PCIHostBridge(), device: 0)
    let function = BARFunction()
    try bus.attach(function, device: 3)
    return (bus, PCIConfigPorts(bus: bus), PCIExpressECAM(bus: bus), function)
  }

  /// Reads a register through 0xCF8/0xCFC.
  static func conf1(_ ports: PCIConfigPorts, device: Int, register: Int, width: Int = 4) -> UInt64 {
    ports.addressPort.write(offset: 0, width: 4, value: UInt64(0x8000_0000 | device << 11 | register & 0xFC))
    return ports.dataPort.read(offset: UInt64(register & 3), width: width)
  }

  @Test("The host bridge answers at 00:00.0 through both mechanisms; empty slots read all ones")
  func enumeration() throws {
    let (_, ports, ecam, _) = try Self.bus()
    #expect(Self.conf1(ports, device: 0, register: 0) == 0x0008_1B36)
    #expect(ecam.read(offset: 0, width: 4) == 0x0008_1B36)
    #expect(Self.conf1(ports, device: 0, register: 0x0B, width: 1) == 0x06, "class: bridge")
    #expect(Self.conf1(ports, device: 7, register: 0) == 0xFFFF_FFFF)
    #expect(ecam.read(offset: 7 << 15, width: 2) == 0xFFFF)
    ports.addressPort.write(offset: 0, width: 4, value: 0x8000_1804)
    #expect(ports.addressPort.read(offset: 0, width: 4) == 0x8000_1804, "the address register reads back")
    #expect(ports.addressPort.read(offset: 0, width: 1) == 0xFF, "only 32-bit accesses reach it")
    ports.addressPort.write(offset: 0, width: 4, value: 0x0000_0000)
    #expect(ports.dataPort.read(offset: 0, width: 4) == 0xFFFF_FFFF, "disabled: nothing answers")
  }

  @Test("BAR sizing: all ones reads back the size mask and type bits; a programmed base decodes")
  func barSizing() throws {
    let (_, _, ecam, function) = try Self.bus()
    let base: UInt64 = 3 << 15
    for register in [0x10, 0x14, 0x18, 0x1C] {
      ecam.write(offset: base + UInt64(register), width: 4, value: 0xFFFF_FFFF)
    }
    #expect(ecam.read(offset: base + 0x10, width: 4) == 0xFFFF_C00C, "64-bit prefetchable, 16 KiB")
    #expect(ecam.read(offset: base + 0x14, width: 4) == 0xFFFF_FFFF, "upper half")
    #expect(ecam.read(offset: base + 0x18, width: 4) == 0xFFFF_FFC1, "I/O, 64 bytes")
    #expect(ecam.read(offset: base + 0x1C, width: 4) == 0xFFFF_F000, "32-bit memory, 4 KiB")
    ecam.write(offset: base + 0x10, width: 4, value: 0xE000_0000)
    ecam.write(offset: base + 0x14, width: 4, value: 0x1)
    #expect(function.space.barAddress(0) == 0x1_E000_0000)
    ecam.write(offset: base + 0x04, width: 2, value: 0xFFFF)
    #expect(ecam.read(offset: base + 0x04, width: 2) == 0x0407, "only the driver's command bits stick")
    #expect(function.space.memoryEnabled)
    ecam.write(offset: base, width: 4, value: 0)
    #expect(ecam.read(offset: base, width: 4) == 0x1042_1AF4, "identity is read-only")
  }

  @Test("Slots: outside 0–31 and doubly used are refused")
  func slots() throws {
    let (bus, _, _, _) = try Self.bus()
    #expect(throws: PCIBusError.slotTaken(3)) { try bus.attach(PCIHostBridge(), device: 3) }
    #expect(throws: PCIBusError.noSuchSlot(32)) { try bus.attach(PCIHostBridge(), device: 32) }
    #expect(bus.attached.map(\.device) == [0, 3])
  }

  @Test("A saved configuration space is small (no trailing zeros), round-trips, and reads the whole form")
  func savedForm() throws {
    let function = BARFunction()
    function.space.setDeviceBytes([0x11, 0x00, 0x22], at: 0x40, writable: [0xFF, 0, 0])
    function.space.write(0x04, width: 2, value: 0x6)
    let saved = try JSONEncoder().encode(function.space)
    #expect(saved.count < 600, "\(saved.count) bytes for a 4 KiB space")
    #expect(try JSONDecoder().decode(PCIConfigSpace.self, from: saved) == function.space)

    // The whole form, as states saved before the size was recorded hold it.
    var whole = try #require(try JSONSerialization.jsonObject(with: saved) as? [String: Any])
    whole["size"] = nil
    whole["bytes"] = Base64Bytes.encode(function.space.bytes)
    whole["writeMask"] = Base64Bytes.encode([UInt8](repeating: 0, count: 4096))
    let old = try JSONSerialization.data(withJSONObject: whole)
    #expect(try JSONDecoder().decode(PCIConfigSpace.self, from: old).bytes == function.space.bytes)

    // More bytes than the size, a size no PCI space has, or whole arrays of different lengths.
    for (size, bytes, mask) in [(256, 300, 0), (100, 10, 10), (nil, 4096, 256)] as [(Int?, Int, Int)] {
      var hostile = whole
      hostile["size"] = size
      hostile["bytes"] = Base64Bytes.encode([UInt8](repeating: 1, count: bytes))
      hostile["writeMask"] = Base64Bytes.encode([UInt8](repeating: 1, count: mask))
      let data = try JSONSerialization.data(withJSONObject: hostile)
      #expect(throws: DecodingError.self, "size \(String(describing: size)), \(bytes) and \(mask) bytes") {
        try JSONDecoder().decode(PCIConfigSpace.self, from: data)
      }
    }
  }
}
