import Foundation
import Testing

@testable import VMM

/// The destination's decoder against hostile streams: each refused with what was wrong,
/// nothing believed before it is checked.
@Suite("Migration streams")
struct MigrationStreamTests {
  static let configuration = Array(
    ("{\"timesExits\":false,\"entropy\":false,\"disks\":[],\"debugExitPort\":244,\"memorySize\":65536,"
      + "\"boot\":{\"flatImage\":{\"bytes\":[244],\"entry\":\"real\"}},\"cpuCount\":1,\"name\":\"t\","
      + "\"consoleDevice\":\"serial\"}").utf8)

  static func le32(_ value: UInt32) -> [UInt8] { withUnsafeBytes(of: value.littleEndian) { Array($0) } }
  static func le64(_ value: UInt64) -> [UInt8] { withUnsafeBytes(of: value.littleEndian) { Array($0) } }

  /// A hello for 64 KiB of RAM at 0, with `configuration`.
  static func hello(version: UInt32 = MigrationKind.formatVersion, configuration: [UInt8] = configuration) -> [UInt8] {
    Array("SKVMMIGR".utf8) + le32(version) + le32(UInt32(configuration.count)) + configuration + le32(1) + le64(0)
      + le64(65536)
  }

  /// What the destination says of `stream` (it meets the end of the stream after it).
  static func receive(_ stream: [UInt8]) -> String {
    var ends: [Int32] = [0, 0]
    guard socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0, &ends) == 0 else { return "no socket pair" }
    var size = Int32(1 << 20)
    _ = setsockopt(ends[1], SOL_SOCKET, SO_SNDBUF, &size, socklen_t(MemoryLayout<Int32>.size))
    _ = stream.withUnsafeBytes { send(ends[1], $0.baseAddress, $0.count, Int32(MSG_DONTWAIT)) }
    shutdown(ends[1], Int32(SHUT_WR))
    defer { close(ends[1]) }
    do {
      _ = try IncomingMigration.receive(fromSocket: ends[0], peer: "the test")
      return "accepted"
    } catch {
      return error.description
    }
  }

  /// Streams and what the destination must say of each.
  static let hostileCases: [([UInt8], String)] = {
    var cases: [([UInt8], String)] = []
    cases.append((Array("HTTP/1.1 200".utf8), "no SKVMMIGR greeting"))
    cases.append((hello(version: 7), "speaks migration format 7"))
    cases.append((hello(configuration: Array("{\"memorySize\":".utf8)), "configuration cannot be read"))
    let page: [UInt8] = [0x50]
    let zeros: [UInt8] = [0x5A]
    cases.append((hello() + page + le64(0x10000) + le32(1), "outside the machine's RAM"))
    cases.append((hello() + page + le64(0xF000) + le32(2), "outside the machine's RAM"))
    cases.append((hello() + zeros + le64(0) + le32(0), "outside the machine's RAM"))
    cases.append((hello() + page + le64(0) + le32(1) + [1, 2, 3], "closed the connection mid-stream"))
    cases.append((hello() + [0x77], "message kind 0x77"))
    // Two regions whose sizes add up past 2^64: refused, not an arithmetic trap.
    let huge =
      Array("SKVMMIGR".utf8) + le32(MigrationKind.formatVersion) + le32(UInt32(configuration.count)) + configuration
      + le32(2) + le64(0)
      + le64(4096) + le64(8192) + le64(UInt64.max - 4095 - 8192)
    cases.append((huge, "RAM map is malformed"))
    cases.append((hello() + [0x43], "without sending the machine's state"))
    cases.append((hello() + [0x58], "cancelled the migration"))
    // The source lets go of its disks once, before the state.
    cases.append((hello() + [0x4C, 0x4C], "released its disks twice"))
    let text = String(decoding: configuration, as: UTF8.self)
    let withDisk = text.replacingOccurrences(
      of: "\"disks\":[]",
      with: "\"disks\":[{\"path\":\"/nonexistent/disk.qcow2\",\"readOnly\":false,\"cache\":\"writeback\"}]")
    // Each disk's identity follows the RAM map: format and virtual size as the source has it.
    let raw1M = le32(3) + Array("raw".utf8) + le64(1 << 20)
    cases.append((hello(configuration: Array(withDisk.utf8)) + raw1M, "disk /nonexistent/disk.qcow2 is not here"))
    // A disk that is here but is not the source's image: another size.
    let other = FileManager.default.temporaryDirectory.appendingPathComponent("skvm-migration-other-disk.raw").path
    _ = FileManager.default.createFile(atPath: other, contents: Data(count: 4096))
    let withOther = text.replacingOccurrences(
      of: "\"disks\":[]",
      with: "\"disks\":[{\"path\":\"\(other)\",\"readOnly\":false,\"cache\":\"writeback\"}]")
    cases.append(
      (
        hello(configuration: Array(withOther.utf8)) + raw1M,
        "here is a raw image of 4096 bytes, on the source a raw image of 1048576 bytes"
      ))
    cases.append((hello(configuration: Array(withOther.utf8)) + le32(4000), "a disk format"))
    return cases
  }()

  @Test(
    "Wrong magic, wrong version, a broken configuration, a page outside RAM, a missing disk, an unknown message, a cut stream: each refused with its reason",
    arguments: hostileCases)
  func hostile(stream: [UInt8], says: String) {
    let outcome = Self.receive(stream)
    #expect(outcome.contains(says), "\(outcome)")
  }

  @Test("A well-formed stream becomes a snapshot that opens and checks")
  func wellFormed() {
    let record = Array(
      ("{\"formatVersion\":1,\"configuration\":" + String(decoding: Self.configuration, as: UTF8.self)
        + ",\"vcpus\":[],\"kernel\":{\"clockFlags\":0,\"clockRealtime\":0,\"interruptControllers\":[],"
        + "\"savedAtNanoseconds\":0,\"clock\":0,\"pit\":\"\"}}").utf8)
    let devices = Array("{}".utf8)
    let stream =
      Self.hello() + [0x50] + Self.le64(0x1000) + Self.le32(1) + [UInt8](repeating: 0xAB, count: 4096) + [0x5A]
      + Self.le64(0x2000) + Self.le32(2) + [0x44] + [0x53] + Self.le32(UInt32(record.count))
      + Self.le32(UInt32(devices.count))
      + record + devices + [0x43]
    // The run state after `complete`: 0 or 1, nothing else.
    #expect(Self.receive(stream + [1]) == "accepted")
    #expect(Self.receive(stream + [0]) == "accepted")
    #expect(Self.receive(stream + [7]).contains("run state 7"))
    // With the disks released before the state (the source's order), and after it (refused).
    let state = stream.count - record.count - devices.count - 10
    #expect(Self.receive(Array(stream[..<state]) + [0x4C] + stream[state...] + [1]) == "accepted")
    #expect(Self.receive(Array(stream.dropLast()) + [0x4C]).contains("after sending the state"))
  }
}
