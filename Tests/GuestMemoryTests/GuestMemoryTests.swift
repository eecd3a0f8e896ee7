import Foundation
import Glibc
import Testing

@testable import GuestMemory

@Suite("Guest memory")
struct GuestMemoryTests {
  static let oneMiB: UInt64 = 1 << 20

  func makeMemory() throws -> GuestMemory {
    try GuestMemory(ranges: [(0, Self.oneMiB), (0x1_0000_0000, Self.oneMiB)])
  }

  @Test("Integers round-trip little-endian at any alignment")
  func loadsAndStores() throws {
    let memory = try makeMemory()
    try memory.store(UInt64(0x0102_0304_0506_0708), at: 0x1003)
    #expect(try memory.load(UInt64.self, at: 0x1003) == 0x0102_0304_0506_0708)
    #expect(try memory.load(UInt8.self, at: 0x1003) == 0x08, "little-endian: low byte first")
    try memory.store(UInt16(0xBEEF), at: 0x1_0000_0000)
    #expect(try memory.bytes(at: 0x1_0000_0000, length: 2) == [0xEF, 0xBE])
  }

  @Test(
    "Pages nobody wrote are reported as unwritten; a written page, and only it, is not",
    arguments: [GuestMemory.Backing.anonymous, .memfd])
  func unwrittenRanges(backing: GuestMemory.Backing) throws {
    let memory = try GuestMemory(ranges: [(0, Self.oneMiB), (0x1_0000_0000, Self.oneMiB)], backing: backing)
    let page = GuestMemory.pageSize
    #expect(memory.unwrittenRanges().map(\.size).reduce(0, +) == 2 * Self.oneMiB, "fresh RAM is all holes")
    try memory.store(UInt8(1), at: 0x3005)
    try memory.store(UInt8(1), at: 0x1_0000_0000 + Self.oneMiB - 1)
    let ranges = memory.unwrittenRanges()
    #expect(ranges.map(\.size).reduce(0, +) == 2 * Self.oneMiB - 2 * page)
    for (start, size) in ranges {
      #expect(!(start..<start + size).contains(0x3000), "the written low page is data")
      #expect(!(start..<start + size).contains(0x1_0000_0000 + Self.oneMiB - page), "the written high page too")
      #expect(start % page == 0 && size % page == 0)
    }
    #expect(ranges.contains { $0.guestAddress == 0 && $0.size == 0x3000 })
    #expect(ranges.contains { $0.guestAddress == 0x4000 && $0.size == Self.oneMiB - 0x4000 })
  }

  @Test("Anonymous RAM is 2 MiB-aligned to its guest address; written pages are found and written out, holes kept")
  func anonymousRAM() throws {
    let size: UInt64 = 8 << 20
    let memory = try GuestMemory(ranges: [(0, size), (0x1_0020_0000 + 0x3000, Self.oneMiB)], backing: .anonymous)
    for region in memory.regions {
      #expect(UInt64(UInt(bitPattern: region.host)) % (2 << 20) == region.guestAddress % (2 << 20))
    }
    let written: [UInt64] = [0x3005, 0x1F_FFFF, 0x50_0000, size - 1]
    for address in written { try memory.store(UInt8(0xA5), at: address) }
    let holes = memory.unwrittenRanges()
    for address in written {
      #expect(!holes.contains { ($0.guestAddress..<$0.guestAddress + $0.size).contains(address) })
    }
    // The low 2 MiB is in small pages: the write at 0x3005 made one page, not a huge one.
    #expect(holes.contains { $0.guestAddress == 0 && $0.size == 0x3000 })
    #expect(holes.contains { $0.guestAddress == 0x4000 })
    try withTemporaryFile("skvm-anon", size: size) { fd in
      try memory.write(region: 0, to: fd, at: 0)
      var file = [UInt8](repeating: 0xFF, count: Int(size))
      #expect(pread(fd, &file, file.count, 0) == file.count)
      #expect(file == (try memory.bytes(at: 0, length: Int(size))), "the file holds the region, zeros included")
    }
    var runs: [[UInt64]] = []
    memory.forEachNonZeroRun(region: 0) { offset, bytes in runs.append([offset, UInt64(bytes.count)]) }
    #expect(runs == [[0x3000, 4096], [0x1F_F000, 4096], [0x50_0000, 4096], [size - 4096, 4096]])
  }

  @Test("A sparse file's data extents are found and clipped to the range asked; pagemap runs cover the region")
  func dataExtentsAndPagemapRuns() throws {
    try withTemporaryFile("skvm-sparse", size: 8 << 20) { fd in
      let block = [UInt8](repeating: 7, count: 1 << 16)
      #expect(pwrite(fd, block, block.count, 1 << 20) == block.count)
      #expect(pwrite(fd, block, block.count, 5 << 20) == block.count)
      let all = try GuestMemory.dataExtents(of: fd, from: 0, to: 8 << 20)
      // A file system without SEEK_HOLE reports all data: both blocks are inside either way.
      for start in [UInt64(1 << 20), 5 << 20] {
        #expect(all.contains { $0.start <= start && $0.end >= start + UInt64(block.count) })
      }
      let clipped = try GuestMemory.dataExtents(of: fd, from: (1 << 20) + 4096, to: 5 << 20)
      #expect(clipped.allSatisfy { $0.start >= (1 << 20) + 4096 && $0.end <= 5 << 20 && $0.start < $0.end })
      #expect(try GuestMemory.dataExtents(of: fd, from: 9 << 20, to: 10 << 20).isEmpty, "past the end: nothing")
    }

    let memory = try GuestMemory(ranges: [(0, 4 * Self.oneMiB)], backing: .anonymous)
    try memory.store(UInt8(1), at: 0x5000)
    let runs = try #require(memory.pagemapRuns(region: 0) { $0 & (1 << 63) != 0 })
    #expect(runs.map(\.extent.length).reduce(0, +) == 4 * Self.oneMiB, "the runs cover the region")
    #expect(zip(runs, runs.dropFirst()).allSatisfy { $0.matches != $1.matches }, "neighbours differ")
    #expect(runs.contains { $0.matches && $0.extent.offset <= 0x5000 && $0.extent.offset + $0.extent.length > 0x5000 })
    #expect(runs.first.map { !$0.matches && $0.extent == (0, 0x5000) } == true, "untouched pages before it")
  }

  /// Runs `body` with a new file of `size` bytes (a hole) in the temporary directory, removed after.
  func withTemporaryFile(_ name: String, size: UInt64, _ body: (Int32) throws -> Void) throws {
    let path = FileManager.default.temporaryDirectory.appendingPathComponent("\(name)-\(getpid()).raw").path
    let fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0o600)
    try #require(fd >= 0)
    defer {
      close(fd)
      unlink(path)
    }
    try #require(ftruncate(fd, off_t(size)) == 0)
    try body(fd)
  }

  static let outsideAccesses: [(UInt64, Int)] = [
    ((1 << 20) - 7, 8),  // straddles the end of the low region
    (1 << 20, 1),  // just past it
    (0x8000_0000, 4),  // in the hole
    (0x1_0000_0000 + (1 << 20), 1),  // past the high region
    (UInt64.max - 3, 8),  // wraps around
    (UInt64.max, 1),
  ]

  @Test("Accesses outside RAM fail instead of touching host memory", arguments: outsideAccesses)
  func outOfBounds(address: UInt64, length: Int) throws {
    let memory = try makeMemory()
    #expect(throws: GuestMemoryError(address: address, length: UInt64(length))) {
      _ = try memory.buffer(at: address, length: length)
    }
  }

  @Test("The last byte of each region is reachable; zero-length accesses inside are fine")
  func edges() throws {
    let memory = try makeMemory()
    try memory.store(UInt8(0x5A), at: Self.oneMiB - 1)
    #expect(try memory.load(UInt8.self, at: Self.oneMiB - 1) == 0x5A)
    #expect(try memory.buffer(at: 0, length: 0).count == 0)
    #expect(throws: GuestMemoryError.self) { _ = try memory.buffer(at: 0, length: -1) }
    #expect(throws: GuestMemoryError.self) { _ = try memory.bytes(at: Self.oneMiB - 1, length: 2) }
  }

  @Test("An access spanning two regions is refused, not split")
  func noSpanning() throws {
    let memory = try GuestMemory(ranges: [(0, 0x1000), (0x1000, 0x1000)])
    #expect(memory.totalSize == 0x2000)
    #expect(throws: GuestMemoryError.self) { _ = try memory.buffer(at: 0xFFE, length: 4) }
    #expect(try memory.buffer(at: 0x1000, length: 4).count == 4)
  }

  static let invalidRanges: [[(UInt64, UInt64)]] = [
    [(0, 0)], [(0, 4095)], [(1, 4096)], [(0, 8192), (4096, 4096)],
  ]

  @Test("Invalid layouts are refused", arguments: invalidRanges)
  func invalidLayouts(ranges: [(UInt64, UInt64)]) {
    #expect(throws: GuestMemoryAllocationError.self) {
      _ = try GuestMemory(ranges: ranges.map { (guestAddress: $0.0, size: $0.1) })
    }
  }
}
