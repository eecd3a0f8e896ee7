import Testing

@testable import Devices

final class EchoDevice: IODevice {
  let name: String
  init(_ name: String) { self.name = name }
  func read(offset: UInt64, width: Int) -> UInt64 { offset }
  func write(offset: UInt64, width: Int, value: UInt64) {}
}

@Suite("I/O bus")
struct IOBusTests {
  @Test("Addresses resolve to the right device and offset, edges included")
  func resolution() throws {
    let bus = IOBus(kind: .port)
    try bus.register(EchoDevice("a"), base: 0x10, size: 0x10)
    try bus.register(EchoDevice("b"), base: 0x40, size: 1)
    try bus.register(EchoDevice("c"), base: 0x20, size: 0x20)
    #expect(bus.resolve(0x0F) == nil)
    #expect(bus.resolve(0x10).map { ($0.device.name, $0.offset) } ?? ("", 0) == ("a", 0))
    #expect(bus.resolve(0x1F).map { ($0.device.name, $0.offset) } ?? ("", 0) == ("a", 0xF))
    #expect(bus.resolve(0x20)?.device.name == "c")
    #expect(bus.resolve(0x3F)?.offset == 0x1F)
    #expect(bus.resolve(0x40)?.device.name == "b")
    #expect(bus.resolve(0x41) == nil)
    #expect(bus.read(0x41, width: 1) == nil)
    #expect(!bus.write(0x41, width: 1, value: 0))
    #expect(bus.allMappings.map(\.base) == [0x10, 0x20, 0x40])
  }

  @Test("A view answers as the bus does: repeats, neighbours of the last hit, gaps, and after the bus changes")
  func view() throws {
    let bus = IOBus(kind: .port)
    try bus.register(EchoDevice("a"), base: 0x10, size: 0x10)
    try bus.register(EchoDevice("c"), base: 0x20, size: 0x20)
    try bus.register(EchoDevice("b"), base: 0x40, size: 1)
    var view = IOBusView(bus)
    // Every address from below the first range to past the last, in an order that jumps
    // between ranges and steps just outside the range hit last.
    let addresses: [UInt64] = [0x15, 0x15, 0x1F, 0x20, 0x0F, 0x10, 0x3F, 0x40, 0x41, 0x40, 0x3F, 0x00, 0x2A, 0x2A]
    for address in addresses {
      #expect(view.read(address, width: 1) == bus.read(address, width: 1), "0x\(String(address, radix: 16))")
      #expect(view.write(address, width: 1, value: 0) == bus.write(address, width: 1, value: 0))
    }
    // The range hit last goes away: the view sees the change at its next access.
    #expect(view.read(0x40, width: 1) == 0)
    #expect(bus.unregister(base: 0x40))
    #expect(view.read(0x40, width: 1) == nil)
    try bus.register(EchoDevice("d"), base: 0x40, size: 8)
    #expect(view.read(0x47, width: 1) == 7)
    #expect(view.read(0x48, width: 1) == nil)
  }

  @Test("Overlapping and empty ranges are refused; unregistering frees the range")
  func conflicts() throws {
    let bus = IOBus(kind: .mmio)
    try bus.register(EchoDevice("a"), base: 0x1000, size: 0x1000)
    #expect(throws: IOBusError.self) { try bus.register(EchoDevice("b"), base: 0x1FFF, size: 1) }
    #expect(throws: IOBusError.self) { try bus.register(EchoDevice("b"), base: 0x800, size: 0x801) }
    #expect(throws: IOBusError.self) { try bus.register(EchoDevice("b"), base: 0x3000, size: 0) }
    #expect(throws: IOBusError.self) { try bus.register(EchoDevice("b"), base: UInt64.max, size: 2) }
    try bus.register(EchoDevice("top"), base: UInt64.max, size: 1)
    #expect(bus.resolve(UInt64.max)?.device.name == "top")
    #expect(bus.unregister(base: 0x1000))
    #expect(!bus.unregister(base: 0x1000))
    try bus.register(EchoDevice("b"), base: 0x1800, size: 0x10)
    #expect(bus.resolve(0x1000) == nil)
  }

  @Test("The overlap error names both devices, the range taken, and the free ranges nearby that fit")
  func overlapMessage() throws {
    let bus = IOBus(kind: .port)
    try bus.register(EchoDevice("serial0"), base: 0x3F8, size: 8)
    try bus.register(EchoDevice("rtc"), base: 0x70, size: 2)
    try bus.register(EchoDevice("tail"), base: 0xFFF0, size: 16)
    do {
      try bus.register(EchoDevice("other"), base: 0x3FC, size: 4)
      Issue.record("expected an overlap error")
    } catch {
      #expect(
        error.description
          == "other: port I/O range of 4 bytes at 0x3fc overlaps serial0 at 0x3f8-0x3ff; free ranges nearby: 0x72-0x3f7, 0x400-0xffef"
      )
    }
    #expect(bus.freeRanges(fitting: 0x400, near: 0x3FC) == [0x400...0xFFEF], "below is too small for 1 KiB")
    #expect(bus.freeRanges(fitting: 16, near: 0) == [0...0x6F, 0x72...0x3F7])
    let full = IOBus(kind: .port)
    try full.register(EchoDevice("all"), base: 0, size: 0x10000)
    #expect(full.freeRanges(fitting: 1, near: 0x80).isEmpty)
  }

  @Test("allOnes covers every width")
  func allOnes() {
    #expect(UInt64.allOnes(width: 1) == 0xFF)
    #expect(UInt64.allOnes(width: 2) == 0xFFFF)
    #expect(UInt64.allOnes(width: 4) == 0xFFFF_FFFF)
    #expect(UInt64.allOnes(width: 8) == .max)
  }
}
