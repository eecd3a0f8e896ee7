import DiskImage
import Foundation

/// Copies a domain's disk for `clone`: a full copy in the same format (zero runs left
/// unwritten, so sparse stays sparse), or a qcow2 overlay backed by the original (`--linked`),
/// which then must not change while the clone lives.
enum DiskClone {
  /// The path of clone `name`'s copy of `source` (its `index`th disk): the same directory and
  /// extension, the clone's name.
  static func path(for source: String, clone name: String, index: Int) -> String {
    let url = URL(fileURLWithPath: source)
    let directory = url.deletingLastPathComponent().path
    let extensionPart = url.pathExtension.isEmpty ? "" : "." + url.pathExtension
    let suffix = index == 0 ? "" : "-\(index)"
    let safeName = name.replacingOccurrences(of: " ", with: "_")
    return directory + "/" + safeName + suffix + extensionPart
  }

  /// Writes `destination` from `source`; `linked` makes a qcow2 overlay instead of a copy.
  /// Returns the destination's format.
  static func copy(source: String, format: String?, to destination: String, linked: Bool) throws(DiskCloneError)
    -> DiskImageFormat
  {
    if FileManager.default.fileExists(atPath: destination) { throw .exists(destination) }
    do {
      return try copyImage(source: source, format: format, to: destination, linked: linked)
    } catch {
      throw .image(error)
    }
  }

  private static func copyImage(source: String, format: String?, to destination: String, linked: Bool)
    throws(DiskImageError) -> DiskImageFormat
  {
    let sourceFormat: DiskImageFormat
    if let format, let named = DiskImageFormat(rawValue: format) {
      sourceFormat = named
    } else {
      sourceFormat = try DiskImage.detectFormat(source)
    }
    let input = try DiskImage.open(source, format: sourceFormat)
    defer { input.close() }
    if linked {
      var options = QCow2CreateOptions(size: input.size)
      options.backingFile = source
      options.backingFormat = sourceFormat
      let overlay = try QCow2Image.create(at: destination, options: options)
      try overlay.flush()
      overlay.close()
      return .qcow2
    }
    let output: any BlockBackend
    switch sourceFormat {
    case .raw: output = try RawImage.create(at: destination, size: input.size)
    case .qcow2: output = try QCow2Image.create(at: destination, options: QCow2CreateOptions(size: input.size))
    }
    defer { output.close() }
    let chunk = 1 << 20
    let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: chunk, alignment: 4096)
    defer { buffer.deallocate() }
    var offset: UInt64 = 0
    while offset < input.size {
      let count = Int(min(UInt64(chunk), input.size - offset))
      let view = UnsafeMutableRawBufferPointer(rebasing: buffer[0..<count])
      try input.read(into: view, at: offset)
      // 64 KiB runs of zeros stay holes (unallocated clusters, sparse raw).
      var start = 0
      while start < count {
        let end = min(start + 65536, count)
        let run = UnsafeRawBufferPointer(rebasing: view[start..<end])
        if run.contains(where: { $0 != 0 }) { try output.write(run, at: offset + UInt64(start)) }
        start = end
      }
      offset += UInt64(count)
    }
    try output.flush()
    return sourceFormat
  }
}

/// Why a disk was not copied for a clone.
enum DiskCloneError: Error, CustomStringConvertible {
  /// The destination exists: nothing was written.
  case exists(String)
  /// Reading the source or writing the copy failed.
  case image(DiskImageError)

  var description: String {
    switch self {
    case .exists(let path): "\(path) exists already: the clone would overwrite it (move it away, or pick another name)"
    case .image(let error): "\(error)"
    }
  }
}
