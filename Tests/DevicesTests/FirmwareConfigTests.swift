import GuestMemory
import Testing

@testable import Devices

/// fw_cfg as QEMU's `docs/specs/fw_cfg.rst` defines it, driven as SeaBIOS drives it: the
/// selector and data ports, the file directory, and DMA descriptors — well-formed and hostile.
@Suite("fw_cfg")
struct FirmwareConfigTests {
  static func device() throws -> (FirmwareConfig, GuestMemory) {
    var contents = FirmwareConfigContents()
    try contents.set(FirmwareConfigContents.Key.cpuCount, FirmwareConfigContents.littleEndian(UInt16(2)))
    try contents.addFile("etc/e820", Array(0..<40))
    try contents.addFile("bootorder", Array("/pci@i0cf8/*@1\n".utf8))
    let memory = try GuestMemory(ranges: [(0, 1 << 20)])
    return (FirmwareConfig(contents: contents, memory: memory), memory)
  }

  /// Selects `key` and reads `count` bytes through the data port, a byte at a time.
  static func readPort(_ device: FirmwareConfig, key: UInt16, count: Int) -> [UInt8] {
    device.write(offset: 0, width: 2, value: UInt64(key))
    return (0..<count).map { _ in UInt8(device.read(offset: 1, width: 1)) }
  }

  static func bytes(_ memory: GuestMemory, _ count: Int, at address: UInt64) throws -> [UInt8] {
    try (0..<UInt64(count)).map { try memory.load(UInt8.self, at: address + $0) }
  }

  /// Writes a descriptor at `at` and starts it as SeaBIOS does (each half byte-swapped).
  static func dma(
    _ device: FirmwareConfig, _ memory: GuestMemory, at: UInt64, control: UInt32, length: UInt32, target: UInt64
  ) throws -> UInt32 {
    try memory.store(control.bigEndian, at: at)
    try memory.store(length.bigEndian, at: at + 4)
    try memory.store(target.bigEndian, at: at + 8)
    device.write(offset: 4, width: 4, value: UInt64(UInt32(truncatingIfNeeded: at >> 32).byteSwapped))
    device.write(offset: 8, width: 4, value: UInt64(UInt32(truncatingIfNeeded: at).byteSwapped))
    return try memory.load(UInt32.self, at: at).bigEndian
  }

  @Test("Ports: the signature, the feature bits (ports and DMA), a legacy item, zeros past an item's end")
  func ports() throws {
    let (device, _) = try Self.device()
    #expect(Self.readPort(device, key: 0, count: 4) == Array("QEMU".utf8))
    #expect(Self.readPort(device, key: 1, count: 4) == [3, 0, 0, 0])
    #expect(Self.readPort(device, key: 5, count: 4) == [2, 0, 0, 0])
    #expect(Self.readPort(device, key: 0x1234, count: 2) == [0, 0])
    // The DMA register reads "QEMU CFG" in port order.
    let high = device.read(offset: 4, width: 4)
    let low = device.read(offset: 8, width: 4)
    #expect(high == 0x554D_4551 && low == 0x4746_4320)
  }

  @Test("The file directory: a big-endian count, then size, key and a NUL-padded name per file")
  func directory() throws {
    let (device, _) = try Self.device()
    let bytes = Self.readPort(device, key: FirmwareConfigContents.Key.fileDirectory, count: 4 + 2 * 64)
    #expect(bytes[0..<4] == [0, 0, 0, 2])
    #expect(bytes[4..<8] == [0, 0, 0, 40] && bytes[8..<10] == [0, 0x20])
    #expect(Array(bytes[12..<20]) == Array("etc/e820".utf8) && bytes[20] == 0)
    #expect(bytes[68..<72] == [0, 0, 0, 15] && bytes[72..<74] == [0, 0x21])
    #expect(Array(bytes[76..<85]) == Array("bootorder".utf8))
    #expect(Self.readPort(device, key: 0x21, count: 15) == Array("/pci@i0cf8/*@1\n".utf8))
  }

  @Test("DMA: select and read, skip, read on from the offset, zeros past the end; control cleared")
  func dmaRead() throws {
    let (device, memory) = try Self.device()
    let select = FirmwareConfig.Control.select | FirmwareConfig.Control.read | (0x20 << 16)
    #expect(try Self.dma(device, memory, at: 0x1000, control: select, length: 8, target: 0x2000) == 0)
    #expect(try Self.bytes(memory, 8, at: 0x2000) == Array(0..<8))
    #expect(try Self.dma(device, memory, at: 0x1000, control: FirmwareConfig.Control.skip, length: 2, target: 0) == 0)
    try memory.write([UInt8](repeating: 0xEE, count: 64), to: 0x3000)
    #expect(
      try Self.dma(device, memory, at: 0x1000, control: FirmwareConfig.Control.read, length: 40, target: 0x3000) == 0)
    #expect(try Self.bytes(memory, 40, at: 0x3000) == Array(10..<40) + [UInt8](repeating: 0, count: 10))
    #expect(try Self.bytes(memory, 1, at: 0x3000 + 40) == [0xEE])
  }

  @Test(
    "Hostile DMA: a target outside RAM or across its end, a write, a descriptor outside RAM, a huge length: errors, no crash"
  )
  func hostileDMA() throws {
    let (device, memory) = try Self.device()
    let read = FirmwareConfig.Control.select | FirmwareConfig.Control.read | (0x20 << 16)
    #expect(try Self.dma(device, memory, at: 0x1000, control: read, length: 8, target: 1 << 40) == 1)
    #expect(try Self.dma(device, memory, at: 0x1000, control: read, length: 64, target: (1 << 20) - 8) == 1)
    #expect(try Self.dma(device, memory, at: 0x1000, control: read, length: .max, target: 0) == 1)
    let write = FirmwareConfig.Control.select | FirmwareConfig.Control.write | (0x20 << 16)
    #expect(try Self.dma(device, memory, at: 0x1000, control: write, length: 4, target: 0x2000) == 1)
    // A descriptor outside RAM (or straddling its end) is ignored: nothing to read, nowhere to answer.
    device.write(offset: 4, width: 4, value: UInt64(UInt32(0x10).byteSwapped))
    device.write(offset: 8, width: 4, value: UInt64(UInt32(0).byteSwapped))
    device.write(offset: 8, width: 4, value: UInt64(UInt32((1 << 20) - 8).byteSwapped))
    // The device still answers afterwards.
    #expect(Self.readPort(device, key: 0, count: 4) == Array("QEMU".utf8))
  }

  @Test("Contents: names checked (length, characters, duplicates); the state round-trips")
  func contentsAndState() throws {
    var contents = FirmwareConfigContents()
    #expect(throws: FirmwareConfigError.self) { try contents.addFile(String(repeating: "x", count: 56), []) }
    #expect(throws: FirmwareConfigError.self) { try contents.addFile("has space", []) }
    #expect(throws: FirmwareConfigError.self) { try contents.addFile("", []) }
    try contents.addFile("etc/boot-fail-wait", [0, 0, 0, 0])
    #expect(throws: FirmwareConfigError.self) { try contents.addFile("etc/boot-fail-wait", []) }
    #expect(contents.key(of: "etc/boot-fail-wait") == 0x20)
    let (device, _) = try Self.device()
    _ = Self.readPort(device, key: 0x21, count: 3)
    let saved = device.saveState()
    #expect(saved.selector == 0x21 && saved.offset == 3)
    let (other, _) = try Self.device()
    try other.restoreState(saved)
    #expect(UInt8(other.read(offset: 1, width: 1)) == UInt8(ascii: "i"))
  }
}
