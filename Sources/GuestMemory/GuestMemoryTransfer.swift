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
    // Present or swapped, and not a file page: the guest wrote it (copy-on-write).
    guard let runs = pagemapRuns(region: index, where: { $0 & (3 << 62) != 0 && $0 & (1 << 61) == 0 }) else {
      return try Self.writeNonZeroPages(region.host, length: region.size, to: fd, at: fileOffset)
    }
    for (isPrivate, (offset, length)) in runs {
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
  }

  /// Copies the data extents of `[offset, offset + length)` of `source` to `target` at
  /// `targetOffset` (holes stay holes); `fallback` writes the range another way if the kernel refuses.
  static func copyDataExtents(
    from source: Int32, at offset: UInt64, length: UInt64, to target: Int32, at targetOffset: UInt64,
    fallback: () throws(GuestMemoryIOError) -> Void
  ) throws(GuestMemoryIOError) {
    for (start, end) in try dataExtents(of: source, from: offset, to: offset + length) {
      var fellBack = false
      try copyRange(from: source, at: start, to: target, at: targetOffset + (start - offset), length: end - start) {
        () throws(GuestMemoryIOError) in
        fellBack = true
        try fallback()  // the whole range, at once
      }
      if fellBack { return }
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
    for (start, end) in try dataExtents(of: file, from: fileOffset, to: fileOffset + region.size) {
      let inRegion = start - fileOffset
      try copyRange(from: file, at: start, to: memfd, at: memfdOffset + inRegion, length: end - start) {
        () throws(GuestMemoryIOError) in
        var done: UInt64 = 0
        while done < end - start {
          let count = pread(file, region.host + Int(inRegion + done), Int(end - start - done), off_t(start + done))
          if count < 0 && errno == EINTR { continue }
          if count <= 0 {
            throw GuestMemoryIOError(operation: "read of the snapshot's RAM", code: count < 0 ? errno : EIO)
          }
          done += UInt64(count)
        }
      }
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
