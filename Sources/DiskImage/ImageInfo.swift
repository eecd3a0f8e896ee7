import Glibc

/// What `skvm img info` reports about one image, with qemu-img's fields.
public struct ImageInfo: Sendable, Equatable {
  public var filename: String
  public var format: DiskImageFormat
  public var virtualSize: UInt64
  /// Bytes the file occupies on disk.
  public var actualSize: UInt64
  public var clusterSize: UInt64?
  public var backingFilename: String?
  public var fullBackingFilename: String?
  public var backingFormat: String?
  public var dirty = false
  public var snapshots: [QCow2Snapshot] = []
  /// qcow2 only.
  public var compat: String?
  public var lazyRefcounts = false
  public var refcountBits: UInt32 = 16
  public var corrupt = false

  /// Reads the information of `path`, as `format` (detected when nil).
  /// `forceShare` looks at an image another process is writing (qemu-img's -U).
  public static func read(_ path: String, format: DiskImageFormat? = nil, forceShare: Bool = false)
    throws(DiskImageError) -> ImageInfo
  {
    let image = try DiskImage.open(path, format: format, forceShare: forceShare)
    let file = try ImageFile(path: path, writable: false, forceShare: true)
    var info = ImageInfo(
      filename: path, format: image is QCow2Image ? .qcow2 : .raw, virtualSize: image.size,
      actualSize: file.allocatedBytes)
    if let qcow2 = image as? QCow2Image {
      let header = qcow2.header
      info.clusterSize = header.clusterSize
      info.backingFilename = header.backingFile
      info.fullBackingFilename = header.backingFile.map { DiskImage.resolve(backing: $0, of: path) }
      info.backingFormat = header.backingFormat
      info.dirty = header.isDirty
      info.compat = header.version == 3 ? "1.1" : "0.10"
      info.lazyRefcounts = header.lazyRefcounts
      info.refcountBits = header.refcountBits
      info.corrupt = header.isCorrupt
      info.snapshots = try QCow2Snapshot.readTable(header: header, file: qcow2.file).snapshots
    }
    return info
  }
}
