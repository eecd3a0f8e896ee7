import Devices
import DiskImage
import Foundation
import GuestMemory
import Testing

@testable import Virtio

/// The CD-ROM drive: SCSI commands as Linux's sr driver and SeaBIOS send them (and hostile
/// ones), then virtio-scsi requests through hand-written rings against a real image file.
@Suite("virtio-scsi CD-ROM")
struct VirtioSCSITests {
  /// A drive with a 10-block medium.
  let drive = SCSICDROM(mediumSize: 10 * 2048 + 100)

  func data(_ outcome: SCSICDROM.Outcome) -> [UInt8] {
    if case .data(let bytes) = outcome { return bytes }
    Issue.record("expected data, got \(outcome)")
    return []
  }

  @Test("INQUIRY, READ CAPACITY, REPORT LUNS, MODE SENSE, GET CONFIGURATION and GET EVENT STATUS describe a CD-ROM")
  func identity() {
    let inquiry = data(drive.execute([0x12, 0, 0, 0, 96, 0]))
    #expect(inquiry.count == 36 && inquiry[0] == 0x05 && inquiry[1] == 0x80, "a removable CD/DVD device")
    #expect(String(decoding: inquiry[8..<16], as: UTF8.self) == "SKVM    ")
    #expect(data(drive.execute([0x12, 0, 0, 0, 5, 0])).count == 5, "cut to the allocation length")
    #expect(data(drive.execute([0x12, 1, 0x00, 0, 255, 0])) == [0x05, 0, 0, 2, 0x00, 0x80])
    #expect(drive.execute([0x12, 1, 0x83, 0, 255, 0]) == .checkCondition(.invalidField))
    #expect(drive.execute([0x12, 0, 0x80, 0, 255, 0]) == .checkCondition(.invalidField), "a page without EVPD")
    // The last block is 9; blocks are 2048 bytes; the partial block at the end is not there.
    #expect(data(drive.execute([0x25] + [UInt8](repeating: 0, count: 9))) == [0, 0, 0, 9, 0, 0, 8, 0])
    #expect(
      data(drive.execute([0xA0, 0, 0, 0, 0, 0, 0, 0, 0, 16, 0, 0])) == [0, 0, 0, 8] + [UInt8](repeating: 0, count: 12))
    let capabilities = data(drive.execute([0x5A, 0, 0x2A, 0, 0, 0, 0, 0, 255, 0]))
    #expect(
      capabilities.count == 8 + 28 && capabilities[3] == 0x80 && capabilities[8] == 0x2A, "write-protected, page 0x2A")
    #expect(data(drive.execute([0x1A, 0, 0x3F, 0, 255, 0])).count == 4 + 28)
    #expect(drive.execute([0x1A, 0, 0x01, 0, 255, 0]) == .checkCondition(.invalidField))
    #expect(drive.execute([0x5A, 0, 0xEA, 0, 0, 0, 0, 0, 255, 0]) == .checkCondition(SCSISense(key: 5, code: 0x39)))
    #expect(
      data(drive.execute([0x46, 0, 0, 0, 0, 0, 0, 0, 255, 0])) == [0, 0, 0, 12, 0, 0, 0, 8, 0, 0, 3, 4, 0, 8, 1, 0])
    #expect(
      data(drive.execute([0x4A, 1, 0, 0, 0x10, 0, 0, 0, 8, 0])) == [0, 6, 4, 0x10, 0, 2, 0, 0], "medium present")
    #expect(drive.execute([0x4A, 0, 0, 0, 0x10, 0, 0, 0, 8, 0]) == .checkCondition(.invalidField), "asynchronous")
    #expect(data(drive.execute([0, 0, 0, 0, 0, 0])) == [], "TEST UNIT READY: ready")
    #expect(data(drive.execute([0x03, 0, 0, 0, 18, 0])).prefix(3) == [0x70, 0, 0], "REQUEST SENSE: no sense")
  }

  @Test("READ(10/12/16) of the medium, the lead-out edge, out of range, LBA overflow; writes are refused")
  func reads() {
    #expect(drive.execute([0x28, 0, 0, 0, 0, 2, 0, 0, 3, 0]) == .read(offset: 2 * 2048, length: 3 * 2048))
    #expect(drive.execute([0xA8, 0, 0, 0, 0, 9, 0, 0, 0, 1, 0, 0]) == .read(offset: 9 * 2048, length: 2048))
    #expect(drive.execute([0x28, 0, 0, 0, 0, 9, 0, 0, 2, 0]) == .checkCondition(.outOfRange), "past the end")
    #expect(
      drive.execute([0x28, 0, 0, 0, 0, 10, 0, 0, 0, 0]) == .checkCondition(.outOfRange), "at the end, zero blocks")
    let huge: [UInt8] = [0x88, 0] + [UInt8](repeating: 0xFF, count: 8) + [0, 0, 0, 2, 0, 0]
    #expect(drive.execute(huge) == .checkCondition(.outOfRange), "an LBA near 2^64 wraps nothing")
    #expect(drive.execute([0x2A, 0, 0, 0, 0, 0, 0, 0, 1, 0]) == .checkCondition(.writeProtected))
    #expect(drive.execute([0xFF]) == .checkCondition(.invalidOperation), "a short CDB for its group")
    #expect(drive.execute([]) == .checkCondition(.invalidOperation))
    #expect(drive.execute([0xC5] + [UInt8](repeating: 0, count: 31)) == .checkCondition(.invalidOperation))
  }

  @Test("READ TOC: track 1 and the lead-out as LBAs and as MSF (150 frames of pregap); session information")
  func tableOfContents() {
    let lba = data(drive.execute([0x43, 0, 0, 0, 0, 0, 0, 0, 100, 0]))
    #expect(lba == [0, 18, 1, 1, 0, 0x14, 1, 0, 0, 0, 0, 0, 0, 0x14, 0xAA, 0, 0, 0, 0, 10])
    let msf = data(drive.execute([0x43, 2, 0, 0, 0, 0, 0, 0, 100, 0]))
    #expect(Array(msf[8..<12]) == [0, 0, 2, 0], "LBA 0 is 00:02:00")
    #expect(Array(msf[16..<20]) == [0, 0, 2, 10], "the lead-out at block 10 is 00:02:10")
    #expect(data(drive.execute([0x43, 0, 1, 0, 0, 0, 0, 0, 100, 0])) == [0, 10, 1, 1, 0, 0x14, 1, 0, 0, 0, 0, 0])
    #expect(drive.execute([0x43, 0, 2, 0, 0, 0, 0, 0, 100, 0]) == .checkCondition(.invalidField))
    #expect(drive.execute([0x43, 0, 0, 0, 0, 0, 5, 0, 100, 0]) == .checkCondition(.invalidField), "track 5")
  }

  // MARK: - Through the rings

  static let table: UInt64 = 0x1000
  static let available: UInt64 = 0x2000
  static let used: UInt64 = 0x3000

  final class Rig {
    let memory: GuestMemory
    let device: VirtioSCSI
    let path: String
    var availableIndex: UInt16 = 0
    var nextDescriptor: UInt16 = 0

    init() throws {
      memory = try GuestMemory(ranges: [(0, 1 << 20)])
      path = FileManager.default.temporaryDirectory.appendingPathComponent("skvm-cd-\(UUID().uuidString).iso").path
      // Each 2048-byte block is filled with its own number.
      try Data((0..<(16 * 2048)).map { UInt8(truncatingIfNeeded: $0 / 2048) }).write(to: URL(fileURLWithPath: path))
      device = VirtioSCSI(backend: try RawImage(path: path, readOnly: true), memory: memory)
      let idle = SplitVirtqueue(size: 16, descriptorTable: 0x8000, availableRing: 0x9000, usedRing: 0xA000)
      let requests = SplitVirtqueue(
        size: 16, descriptorTable: VirtioSCSITests.table, availableRing: VirtioSCSITests.available,
        usedRing: VirtioSCSITests.used)
      device.activate(queues: [idle, idle, requests], features: 0)
    }

    deinit { try? FileManager.default.removeItem(atPath: path) }

    /// Offers a chain of (address, length, writable) buffers on the request queue.
    func offer(_ buffers: [(UInt64, UInt32, Bool)]) throws {
      for (position, buffer) in buffers.enumerated() {
        let index = nextDescriptor
        let base = VirtioSCSITests.table + 16 * UInt64(index)
        try memory.store(buffer.0, at: base)
        try memory.store(buffer.1, at: base + 8)
        try memory.store(UInt16((position < buffers.count - 1 ? 1 : 0) | (buffer.2 ? 2 : 0)), at: base + 12)
        try memory.store(UInt16(index + 1), at: base + 14)
        nextDescriptor += 1
      }
      try memory.store(
        nextDescriptor - UInt16(buffers.count), at: VirtioSCSITests.available + 4 + 2 * UInt64(availableIndex % 16))
      availableIndex &+= 1
      try memory.store(availableIndex, at: VirtioSCSITests.available + 2)
    }

    /// Writes a request (LUN bytes, then the CDB padded to 32) at `address`.
    func request(lun: [UInt8] = [1, 0, 0x40, 0, 0, 0, 0, 0], cdb: [UInt8], at address: UInt64) throws {
      try memory.write(
        lun + [UInt8](repeating: 0, count: 11) + cdb + [UInt8](repeating: 0, count: 32 - cdb.count), to: address)
    }

    /// (sense length, residual, status, response) of the response at `address`.
    func response(at address: UInt64) throws -> (UInt32, UInt32, UInt8, UInt8) {
      (
        try memory.load(UInt32.self, at: address), try memory.load(UInt32.self, at: address + 4),
        try memory.load(UInt8.self, at: address + 10), try memory.load(UInt8.self, at: address + 11)
      )
    }

    /// The used ring's last written length.
    var lastWritten: UInt32 {
      get throws {
        let index = try memory.load(UInt16.self, at: VirtioSCSITests.used + 2)
        return try memory.load(UInt32.self, at: VirtioSCSITests.used + 4 + 8 * UInt64((index &- 1) % 16) + 4)
      }
    }
  }

  @Test("A READ(10) lands in the guest's buffers, split across two; GOOD, residual 0, the used length counts it")
  func readThroughRings() throws {
    let rig = try Rig()
    try rig.request(cdb: [0x28, 0, 0, 0, 0, 3, 0, 0, 2, 0], at: 0x10000)
    // Response (12 + 96 sense) then 4096 bytes of data in two buffers of 1000 and 3096.
    try rig.offer([(0x10000, 51, false), (0x11000, 108, true), (0x12000, 1000, true), (0x13000, 3096, true)])
    #expect(rig.device.notify(queue: 2))
    let (senseLength, residual, status, response) = try rig.response(at: 0x11000)
    #expect(senseLength == 0 && residual == 0 && status == 0 && response == 0)
    let first = try rig.memory.bytes(at: 0x12000, length: 1000)
    let second = try rig.memory.bytes(at: 0x13000, length: 3096)
    let expected = [UInt8](repeating: 3, count: 2048) + [UInt8](repeating: 4, count: 2048)
    #expect(first + second == expected)
    #expect(try rig.lastWritten == 108 + 4096)
    #expect(rig.device.statistics.withLock { $0.bytesRead } == 4096)
  }

  @Test("Failures come back in the response: sense for a bad LBA, BAD_TARGET, another LUN; a short reply is no crash")
  func failures() throws {
    let rig = try Rig()
    try rig.request(cdb: [0x28, 0, 0, 0, 0, 15, 0, 0, 2, 0], at: 0x10000)
    try rig.offer([(0x10000, 51, false), (0x11000, 108, true), (0x12000, 4096, true)])
    #expect(rig.device.notify(queue: 2))
    let (senseLength, residual, status, _) = try rig.response(at: 0x11000)
    #expect(senseLength == 18 && residual == 4096 && status == 2)
    #expect(
      try rig.memory.load(UInt8.self, at: 0x11000 + 12 + 2) == 5
        && (try rig.memory.load(UInt8.self, at: 0x11000 + 24)) == 0x21)
    // Target 3: BAD_TARGET.
    try rig.request(lun: [1, 3, 0x40, 0, 0, 0, 0, 0], cdb: [0, 0, 0, 0, 0, 0], at: 0x14000)
    try rig.offer([(0x14000, 51, false), (0x15000, 108, true)])
    #expect(rig.device.notify(queue: 2))
    #expect(try rig.response(at: 0x15000).3 == 3)
    // LUN 1: INQUIRY says nothing is there (peripheral qualifier 3).
    try rig.request(lun: [1, 0, 0x40, 1, 0, 0, 0, 0], cdb: [0x12, 0, 0, 0, 36, 0], at: 0x16000)
    try rig.offer([(0x16000, 51, false), (0x17000, 108, true), (0x18000, 36, true)])
    #expect(rig.device.notify(queue: 2))
    #expect(try rig.memory.load(UInt8.self, at: 0x18000) == 0x7F)
    // A reply too short for the response header and sense: nothing written past it, no crash.
    try rig.request(cdb: [0x28, 0, 0, 0, 0, 0, 0, 0, 1, 0], at: 0x19000)
    try rig.offer([(0x19000, 51, false), (0x1A000, 20, true)])
    #expect(rig.device.notify(queue: 2))
    #expect(try rig.response(at: 0x1A000).3 == 9, "FAILURE in the response byte")
    // A request shorter than its header: the queue carries on.
    try rig.offer([(0x1B000, 8, false), (0x1C000, 108, true)])
    #expect(rig.device.notify(queue: 2))
    #expect(rig.device.statistics.withLock { $0.failures } >= 3)
  }

  @Test("The driver's sense and CDB sizes are kept (and saved) within limits, and reset to the defaults")
  func configuration() throws {
    let rig = try Rig()
    #expect(rig.device.readConfig(20, width: 4) == 96 && rig.device.readConfig(24, width: 4) == 32)
    rig.device.writeConfig(20, width: 4, value: 64)
    rig.device.writeConfig(24, width: 4, value: 1000)
    #expect(rig.device.readConfig(20, width: 4) == 64 && rig.device.readConfig(24, width: 4) == 32)
    guard case .scsi(let saved)? = rig.device.deviceState else {
      Issue.record("no saved state")
      return
    }
    rig.device.reset()
    #expect(rig.device.readConfig(20, width: 4) == 96)
    try rig.device.restore(deviceState: .scsi(saved))
    #expect(rig.device.readConfig(20, width: 4) == 64)
    var hostile = saved
    hostile.cdbSize = 100_000
    #expect(throws: DeviceStateError.self) { try rig.device.restore(deviceState: .scsi(hostile)) }
  }
}
