import Glibc

/// Image formats SwiftKVM reads and writes.
public enum DiskImageFormat: String, Sendable, CaseIterable, Codable {
  case raw
  case qcow2
}

/// How an image's I/O uses the host's page cache (QEMU's `cache=` modes of the same names).
public enum CacheMode: String, Sendable, CaseIterable, Codable {
  /// Through the page cache; a guest flush is an `fdatasync`.
  case writeback
  /// Past the page cache with O_DIRECT (the host does not cache the guest's data twice);
  /// a guest flush is still an `fdatasync`, for the device's own cache.
  case none
}

/// Opening images by path: format detection and backing chains.
public enum DiskImage {
  /// Backing chains deeper than this are refused (a loop would otherwise never end).
  public static let maximumChainDepth = 64

  /// The format of the file at `path`: qcow2 by its magic, else raw.
  public static func detectFormat(_ path: String) throws(DiskImageError) -> DiskImageFormat {
    let file = try ImageFile(path: path, writable: false, forceShare: true)
    let magic = BigEndianReader(try file.read(count: 4, at: 0)).u32(0)
    return magic == QCow2Header.magic ? .qcow2 : .raw
  }

  /// Opens `path` as `format` (detected when nil), with its backing chain (always read-only),
  /// every file of the chain in cache mode `cache`. A writable image is locked exclusively,
  /// read-only ones shared, unless `forceShare` (qemu-img's -U; read-only opens only).
  public static func open(
    _ path: String, format: DiskImageFormat? = nil, writable: Bool = false, cache: CacheMode = .writeback,
    forceShare: Bool = false
  )
    throws(DiskImageError) -> any BlockBackend
  {
    try open(path, format: format, writable: writable, cache: cache, forceShare: forceShare, depth: 0)
  }

  private static func open(
    _ path: String, format: DiskImageFormat?, writable: Bool, cache: CacheMode, forceShare: Bool, depth: Int
  )
    throws(DiskImageError) -> any BlockBackend
  {
    guard depth < maximumChainDepth else {
      throw .invalid(path: path, reason: "backing chain deeper than \(maximumChainDepth) (a loop?)")
    }
    let detected = try detectFormat(path)
    let chosen = format ?? detected
    if chosen == .qcow2 && detected != .qcow2 {
      throw .invalid(path: path, reason: "not a qcow2 image (no QFI\\xfb magic); is it raw?")
    }
    switch chosen {
    case .raw:
      return try RawImage(path: path, readOnly: !writable, cache: cache, forceShare: forceShare)
    case .qcow2:
      let file = try ImageFile(path: path, writable: writable, cache: cache, forceShare: forceShare)
      let header = try QCow2Header.read(from: file)
      var backing: (any BlockBackend)?
      if let name = header.backingFile {
        let resolved = resolve(backing: name, of: path)
        guard access(resolved, F_OK) == 0 else {
          throw .missingBacking(image: path, backing: name, lookedAt: resolved)
        }
        let backingFormat = header.backingFormat.flatMap { DiskImageFormat(rawValue: $0) }
        backing = try open(
          resolved, format: backingFormat, writable: false, cache: cache, forceShare: forceShare, depth: depth + 1)
      }
      return try QCow2Image(file: file, header: header, backing: backing)
    }
  }

  /// Opens the qcow2 image at `path` for `QCow2Image.check`: tables reaching past the end of the
  /// file, a dirty or corrupt image are accepted (check reports and repairs them); the backing
  /// chain is not opened (check does not read it). Writable when it is to be repaired.
  public static func openForCheck(_ path: String, writable: Bool, forceShare: Bool = false)
    throws(DiskImageError) -> QCow2Image
  {
    guard try detectFormat(path) == .qcow2 else {
      throw .invalid(path: path, reason: "not a qcow2 image (no QFI\\xfb magic); is it raw?")
    }
    let file = try ImageFile(path: path, writable: writable, forceShare: forceShare)
    let header = try QCow2Header.read(from: file, forCheck: true)
    return try QCow2Image(file: file, header: header, backing: nil, forCheck: true)
  }

  /// A backing file name as QEMU resolves it: absolute as is, relative to the image's directory.
  public static func resolve(backing name: String, of image: String) -> String {
    if name.hasPrefix("/") { return name }
    guard let slash = image.lastIndex(of: "/") else { return name }
    return String(image[...slash]) + name
  }
}
