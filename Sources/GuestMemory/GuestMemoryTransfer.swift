import CSystemCalls
import Glibc

/// A host I/O call failed while guest RAM was copied to or from a file.
public struct GuestMemoryIOError: Error, CustomStringConvertible {
  public let operation: String
  public let code: Int32
  public var description: String { "\(operation): \(String(cString: strerror(code)))" }
}

/// Guest RAM to and from files (snapshots): only the data that is there moves — holes stay
/// holes — and from a memfd it moves inside the kernel (`copy_file_range`), never through
/// this process's memory.
extension GuestMemory {
  /// Writes region `index` to `fd` at `fileOffset` (the file must already be long enough, so
  /// what is not written reads as zeros).
  public func write(region index: Int, to fd: Int32, at fileOffset: UInt64) throws(GuestMemoryIOError) {
    let region = regions[index]
    if sourceFile >= 0, index < sourceOffsets.count {
      return try writeFromSnapshot(region: index, to: fd, at: fileOffset)
    }
    for (offset, length) in writtenExtents(region: index) ?? [(0, region.size)] {
      let host = region.host + Int(offset)
      if memfd >= 0 {
        try Self.copyRange(
          from: memfd, at: memfdOffsets[index] + offset, to: fd, at: fileOffset + offset, length: length
        ) { () throws(GuestMemoryIOError) in
          // copy_file_range refused (another file system): write from the mapping instead.
          try Self.writeNonZeroPages(host, length: length, to: fd, at: fileOffset + offset)
        }
      } else {
        try Self.writeNonZeroPages(host, length: length, to: fd, at: fileOffset + offset)
      }
    }
  }

  /// A region mapped copy-on-write from a snapshot: pages the guest wrote are private
  /// (anonymous, per /proc/self/pagemap) and written from memory; every other page is still
  /// the snapshot's and is copied file to file in the kernel, holes kept.
  private func writeFromSnapshot(region index: Int, to fd: Int32, at fileOffset: UInt64) throws(GuestMemoryIOError) {
    let region = regions[index]
    let pages = Int(region.size / Self.pageSize)
    let pagemap = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC)
    guard pagemap >= 0 else {
      return try Self.writeNonZeroPages(region.host, length: region.size, to: fd, at: fileOffset)
    }
    defer { close(pagemap) }
    let chunk = 65536
    var entries = [UInt64](repeating: 0, count: chunk)
    var page = 0
    var runStart = 0
    var runPrivate: Bool?
    func flush(upTo end: Int) throws(GuestMemoryIOError) {
      guard let isPrivate = runPrivate, end > runStart else { return }
      let offset = UInt64(runStart) * Self.pageSize
      let length = UInt64(end - runStart) * Self.pageSize
      if isPrivate {
        try Self.writeNonZeroPages(region.host + Int(offset), length: length, to: fd, at: fileOffset + offset)
      } else {
        try Self.copyDataExtents(
          from: sourceFile, at: sourceOffsets[index] + offset, length: length, to: fd, at: fileOffset + offset
        ) { () throws(GuestMemoryIOError) in
          try Self.writeNonZeroPages(region.host + Int(offset), length: length, to: fd, at: fileOffset + offset)
        }
      }
    }
    while page < pages {
      let count = min(chunk, pages - page)
      let virtualPage = (UInt(bitPattern: region.host) / UInt(Self.pageSize)) + UInt(page)
      let read = entries.withUnsafeMutableBytes { pread(pagemap, $0.baseAddress, count * 8, off_t(virtualPage * 8)) }
      guard read == count * 8 else { throw GuestMemoryIOError(operation: "read of /proc/self/pagemap", code: errno) }
      for slot in 0..<count {
        let entry = entries[slot]
        // Present or swapped, and not a file page: the guest wrote it (copy-on-write).
        let isPrivate = entry & (3 << 62) != 0 && entry & (1 << 61) == 0
        if runPrivate != isPrivate {
          try flush(upTo: page + slot)
          runStart = page + slot
          runPrivate = isPrivate
        }
      }
      page += count
    }
    try flush(upTo: pages)
  }

  /// Copies the data extents of `[offset, offset + length)` of `source` to `target` at
  /// `targetOffset` (holes stay holes); `fallback` writes the range another way if the kernel refuses.
  static func copyDataExtents(
    from source: Int32, at offset: UInt64, length: UInt64, to target: Int32, at targetOffset: UInt64,
    fallback: () throws(GuestMemoryIOError) -> Void
  ) throws(GuestMemoryIOError) {
    var start = offset
    let end = offset + length
    while start < end {
      let data = lseek(source, off_t(start), csys_seek_data)
      if data < 0 {
        if errno == ENXIO { return }
        throw GuestMemoryIOError(operation: "lseek(SEEK_DATA) on the snapshot", code: errno)
      }
      if UInt64(data) >= end { return }
      let hole = min(UInt64(max(lseek(source, data, csys_seek_hole), data)), end)
      var fellBack = false
      try copyRange(
        from: source, at: UInt64(data), to: target, at: targetOffset + (UInt64(data) - offset),
        length: hole - UInt64(data)
      ) { () throws(GuestMemoryIOError) in
        fellBack = true
        try fallback()  // the whole range, at once
      }
      if fellBack { return }
      start = hole
    }
  }

  /// Copies `length` bytes between files in the kernel; calls `fallback` if it cannot.
  static func copyRange(
    from source: Int32, at sourceOffset: UInt64, to target: Int32, at targetOffset: UInt64, length: UInt64,
    fallback: () throws(GuestMemoryIOError) -> Void
  ) throws(GuestMemoryIOError) {
    var input = off_t(sourceOffset)
    var output = off_t(targetOffset)
    var remaining = length
    while remaining > 0 {
      let copied = csys_copy_file_range(source, &input, target, &output, Int(min(remaining, 1 << 30)))
      if copied < 0 {
        if errno == EINTR { continue }
        if remaining == length && [EXDEV, EINVAL, ENOSYS, EOPNOTSUPP].contains(errno) { return try fallback() }
        throw GuestMemoryIOError(operation: "copy_file_range", code: errno)
      }
      if copied == 0 { break }
      remaining -= UInt64(copied)
    }
  }

  /// Writes the pages of `[host, host + length)` that are not all zeros.
  static func writeNonZeroPages(_ host: UnsafeMutableRawPointer, length: UInt64, to fd: Int32, at fileOffset: UInt64)
    throws(GuestMemoryIOError)
  {
    let page = Int(pageSize)
    var offset = 0
    while offset < Int(length) {
      let words = UnsafeRawBufferPointer(start: host + offset, count: page).bindMemory(to: UInt64.self)
      if !words.allSatisfy({ $0 == 0 }) {
        var done = 0
        while done < page {
          let written = pwrite(fd, host + offset + done, page - done, off_t(fileOffset) + off_t(offset + done))
          if written < 0 {
            if errno == EINTR { continue }
            throw GuestMemoryIOError(operation: "write of guest RAM", code: errno)
          }
          done += written
        }
      }
      offset += page
    }
  }

  /// Fills `region` (backed by `memfd` at `memfdOffset`) from `file` at `fileOffset`: the
  /// file's data extents only.
  static func copyData(
    from file: Int32, at fileOffset: UInt64, into region: Region, memfd: Int32, memfdOffset: UInt64
  ) throws(GuestMemoryIOError) {
    var start = fileOffset
    let end = fileOffset + region.size
    while start < end {
      let data = lseek(file, off_t(start), csys_seek_data)
      if data < 0 {
        if errno == ENXIO { return }
        throw GuestMemoryIOError(operation: "lseek(SEEK_DATA) on the snapshot", code: errno)
      }
      if UInt64(data) >= end { return }
      let hole = min(UInt64(max(lseek(file, data, csys_seek_hole), data)), end)
      let inRegion = UInt64(data) - fileOffset
      try copyRange(from: file, at: UInt64(data), to: memfd, at: memfdOffset + inRegion, length: hole - UInt64(data)) {
        () throws(GuestMemoryIOError) in
        var done: UInt64 = 0
        while done < hole - UInt64(data) {
          let count = pread(
            file, region.host + Int(inRegion + done), Int(hole - UInt64(data) - done), off_t(UInt64(data) + done))
          if count < 0 && errno == EINTR { continue }
          if count <= 0 {
            throw GuestMemoryIOError(operation: "read of the snapshot's RAM", code: count < 0 ? errno : EIO)
          }
          done += UInt64(count)
        }
      }
      start = hole
    }
  }
}

extension GuestMemory {
  /// Calls `body` with each run of pages of region `index` that are not all zeros (offset in
  /// the region, bytes), skipping what a memfd knows to be holes without reading it.
  public func forEachNonZeroRun(
    region index: Int, _ body: (UInt64, UnsafeRawBufferPointer) throws -> Void
  ) rethrows {
    let region = regions[index]
    let extents = writtenExtents(region: index) ?? [(0, region.size)]
    let page = Int(Self.pageSize)
    let limit = 1 << 20
    for (offset, length) in extents {
      var runStart: Int?
      var position = Int(offset)
      let end = Int(offset + length)
      while position <= end {
        let isZero =
          position == end
          || UnsafeRawBufferPointer(start: region.host + position, count: page).bindMemory(to: UInt64.self)
            .allSatisfy { $0 == 0 }
        if let start = runStart, isZero || position - start >= limit {
          try body(UInt64(start), UnsafeRawBufferPointer(start: region.host + start, count: position - start))
          runStart = isZero ? nil : position
        } else if runStart == nil && !isZero {
          runStart = position
        }
        position += page
      }
    }
  }
}
