import Glibc

/// One run of an image's allocation map, with `qemu-img map --output=json`'s fields.
public struct MapEntry: Sendable, Equatable {
  public var start: UInt64
  public var length: UInt64
  /// How far down the backing chain the data was found (0: the image itself).
  public var depth: Int
  /// Whether some layer of the chain has the range.
  public var present: Bool
  /// Whether the range reads as zeros.
  public var zero: Bool
  /// Whether the range is stored as data.
  public var data: Bool
  /// Where in the file of layer `depth` the range's bytes are, when they are stored plainly.
  public var offset: UInt64?
  /// The file of layer `depth`.
  public var filename: String

  func extends(_ next: MapEntry) -> Bool {
    guard depth == next.depth, present == next.present, zero == next.zero, data == next.data,
      start + length == next.start, filename == next.filename
    else { return false }
    switch (offset, next.offset) {
    case (nil, nil): return true
    case (let a?, let b?): return a + length == b
    default: return false
    }
  }
}

extension DiskImage {
  /// The allocation map of `image` and its backing chain, as `qemu-img map` reports it.
  public static func map(_ image: any BlockBackend) throws(DiskImageError) -> [MapEntry] {
    var step: UInt64 = 1 << 16
    var layer: (any BlockBackend)? = image
    while let current = layer {
      if let qcow2 = current as? QCow2Image {
        step = min(step, qcow2.header.clusterSize)
        layer = qcow2.backing
      } else {
        step = min(step, 4096)
        layer = nil
      }
    }
    var entries: [MapEntry] = []
    var position: UInt64 = 0
    while position < image.size {
      let length = min(step, image.size - position)
      let entry = try describe(image, at: position, length: length, depth: 0)
      if let last = entries.last, last.extends(entry) {
        entries[entries.count - 1].length += entry.length
      } else {
        entries.append(entry)
      }
      position += length
    }
    return entries
  }

  private static func describe(_ image: any BlockBackend, at position: UInt64, length: UInt64, depth: Int)
    throws(DiskImageError) -> MapEntry
  {
    var entry = MapEntry(
      start: position, length: length, depth: depth, present: false, zero: true, data: false, offset: nil,
      filename: (image as? QCow2Image)?.path ?? (image as? RawImage)?.path ?? "")
    if let raw = image as? RawImage {
      let hasData = lseek(raw.file.fd, off_t(position), seekData)
      let isData = hasData >= 0 && UInt64(hasData) < position + length
      entry.present = true
      entry.zero = !isData
      entry.data = isData
      entry.offset = position
      return entry
    }
    guard let qcow2 = image as? QCow2Image else { return entry }
    let inCluster = position & (qcow2.header.clusterSize - 1)
    switch try qcow2.mapping(of: position) {
    case .data(let host, _):
      entry.present = true
      entry.zero = false
      entry.data = true
      entry.offset = host + inCluster
    case .compressed:
      entry.present = true
      entry.zero = false
      entry.data = true
    case .zero:
      entry.present = true
    case .unallocated:
      if let backing = qcow2.backing {
        if position < backing.size { return try describe(backing, at: position, length: length, depth: depth + 1) }
        entry.depth = depth + 1
        entry.filename = (backing as? QCow2Image)?.path ?? (backing as? RawImage)?.path ?? ""
      }
    }
    return entry
  }
}

/// lseek's SEEK_DATA on Linux (not exported by the Glibc module).
private let seekData: Int32 = 3
