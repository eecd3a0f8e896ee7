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
    let end = base + regions[index].size
    var extents: [Extent] = []
    var position = base
    while position < end {
      let data = lseek(memfd, off_t(position), csys_seek_data)
      if data < 0 {
        if errno == ENXIO { break }  // nothing but holes from here on
        return nil  // the file system cannot say
      }
      if UInt64(data) >= end { break }
      let hole = min(UInt64(max(lseek(memfd, data, csys_seek_hole), data + 1)), end)
      let first = UInt64(data) / Self.pageSize * Self.pageSize
      let last = min((hole + Self.pageSize - 1) / Self.pageSize * Self.pageSize, end)
      extents.append((first - base, last - first))
      position = last
    }
    return extents
  }

  /// The pages of anonymous region `index` that are present or swapped out, as runs.
  private func residentExtents(region index: Int) -> [Extent]? {
    let region = regions[index]
    let pagemap = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC)
    guard pagemap >= 0 else { return nil }
    defer { close(pagemap) }
    let pages = Int(region.size / Self.pageSize)
    let chunk = 65536
    var entries = [UInt64](repeating: 0, count: chunk)
    var extents: [Extent] = []
    var runStart: Int?
    var page = 0
    let firstVirtualPage = UInt(bitPattern: region.host) / UInt(Self.pageSize)
    while page < pages {
      let count = min(chunk, pages - page)
      let read = entries.withUnsafeMutableBytes {
        pread(pagemap, $0.baseAddress, count * 8, off_t((firstVirtualPage + UInt(page)) * 8))
      }
      guard read == count * 8 else { return nil }
      for slot in 0..<count {
        let touched = entries[slot] & (3 << 62) != 0  // present (63) or swapped (62)
        if touched, runStart == nil {
          runStart = page + slot
        } else if !touched, let start = runStart {
          extents.append((UInt64(start) * Self.pageSize, UInt64(page + slot - start) * Self.pageSize))
          runStart = nil
        }
      }
      page += count
    }
    if let start = runStart { extents.append((UInt64(start) * Self.pageSize, UInt64(pages - start) * Self.pageSize)) }
    return extents
  }
}
