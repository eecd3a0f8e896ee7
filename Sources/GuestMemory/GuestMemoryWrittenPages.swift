import CSystemCalls
import Glibc

/// Which pages of guest RAM anyone has written, asked of the kernel instead of read: a memfd's
/// data extents (SEEK_DATA/SEEK_HOLE), or for anonymous memory the pages present or swapped
/// out in /proc/self/pagemap. Snapshots and migration skip the rest without touching it.
extension GuestMemory {
  /// One run of region-relative bytes, page-aligned.
  public typealias Extent = (offset: UInt64, length: UInt64)

  /// The runs of region `index` that may have been written (sorted, page-aligned); everything
  /// else reads as zeros. Nil when the kernel cannot tell or the memory is not of a kind it
  /// can tell about (a snapshot mapped copy-on-write): then any page may hold data. A page
  /// counts as unwritten only at the moment of asking (callers that care log writes first).
  public func writtenExtents(region index: Int) -> [Extent]? {
    if memfd >= 0, sourceFile < 0 { return memfdDataExtents(region: index) }
    if isAnonymous { return residentExtents(region: index) }
    return nil
  }

  /// Guest-physical ranges (sorted, page-aligned) that no one has written since the memory
  /// was made: they read as zeros, and reading them would only make the kernel allocate and
  /// clear pages (or map its zero page) to say so. Empty when the kernel cannot tell.
  public func unwrittenRanges() -> [(guestAddress: UInt64, size: UInt64)] {
    var holes: [(guestAddress: UInt64, size: UInt64)] = []
    for (index, region) in regions.enumerated() {
      guard let written = writtenExtents(region: index) else { return [] }
      var position: UInt64 = 0
      for extent in written + [(region.size, 0)] {
        if extent.offset > position { holes.append((region.guestAddress + position, extent.offset - position)) }
        position = max(position, extent.offset + extent.length)
      }
    }
    return holes
  }

  /// A memfd's data extents inside region `index`, rounded out to whole pages.
  private func memfdDataExtents(region index: Int) -> [Extent]? {
    let base = memfdOffsets[index]
    guard let data = try? Self.dataExtents(of: memfd, from: base, to: base + regions[index].size) else { return nil }
    var extents: [Extent] = []
    for (start, end) in data {
      let first = max(start / Self.pageSize * Self.pageSize, extents.last.map { base + $0.offset + $0.length } ?? 0)
      let last = min((end + Self.pageSize - 1) / Self.pageSize * Self.pageSize, base + regions[index].size)
      if last > first { extents.append((first - base, last - first)) }
    }
    return extents
  }

  /// The pages of anonymous region `index` that are present or swapped out, as runs.
  private func residentExtents(region index: Int) -> [Extent]? {
    // Present (bit 63) or swapped (bit 62).
    pagemapRuns(region: index) { $0 & (3 << 62) != 0 }?.filter(\.matches).map(\.extent)
  }

  /// Region `index` cut into runs of pages whose /proc/self/pagemap entries all do or all do
  /// not satisfy `predicate`, in order and covering the region; nil if pagemap cannot be read.
  func pagemapRuns(region index: Int, where predicate: (UInt64) -> Bool) -> [(matches: Bool, extent: Extent)]? {
    let region = regions[index]
    let pagemap = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC)
    guard pagemap >= 0 else { return nil }
    defer { close(pagemap) }
    let pages = Int(region.size / Self.pageSize)
    let chunk = 65536
    var entries = [UInt64](repeating: 0, count: chunk)
    var runs: [(matches: Bool, extent: Extent)] = []
    var runStart = 0
    var runMatches = false
    func endRun(at end: Int) {
      guard end > runStart else { return }
      runs.append((runMatches, (UInt64(runStart) * Self.pageSize, UInt64(end - runStart) * Self.pageSize)))
    }
    let firstVirtualPage = UInt(bitPattern: region.host) / UInt(Self.pageSize)
    var page = 0
    while page < pages {
      let count = min(chunk, pages - page)
      let read = entries.withUnsafeMutableBytes {
        pread(pagemap, $0.baseAddress, count * 8, off_t((firstVirtualPage + UInt(page)) * 8))
      }
      guard read == count * 8 else { return nil }
      for slot in 0..<count {
        let matches = predicate(entries[slot])
        if matches != runMatches {
          endRun(at: page + slot)
          runStart = page + slot
          runMatches = matches
        }
      }
      page += count
    }
    endRun(at: pages)
    return runs
  }

  /// The data extents of `fd` within `[start, end)`, as half-open byte ranges (clipped to
  /// the range, in order), per SEEK_DATA/SEEK_HOLE.
  static func dataExtents(of fd: Int32, from start: UInt64, to end: UInt64) throws(GuestMemoryIOError)
    -> [(start: UInt64, end: UInt64)]
  {
    var extents: [(start: UInt64, end: UInt64)] = []
    var position = start
    while position < end {
      let data = lseek(fd, off_t(position), csys_seek_data)
      if data < 0 {
        if errno == ENXIO { break }  // nothing but holes from here on
        throw GuestMemoryIOError(operation: "lseek(SEEK_DATA)", code: errno)
      }
      if UInt64(data) >= end { break }
      let hole = lseek(fd, data, csys_seek_hole)
      // A hole at or before the data it follows would loop forever: the file system is lying.
      guard hole > data else { throw GuestMemoryIOError(operation: "lseek(SEEK_HOLE)", code: hole < 0 ? errno : EIO) }
      extents.append((UInt64(data), min(UInt64(hole), end)))
      position = UInt64(hole)
    }
    return extents
  }
}
