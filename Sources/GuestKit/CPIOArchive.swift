/// Writes a newc ("070701") cpio archive, the format of Linux initramfs images.
public struct CPIOArchive {
  public private(set) var bytes: [UInt8] = []
  private var nextInode: UInt32 = 1

  public init() {}

  /// Adds a directory.
  public mutating func addDirectory(_ path: String, mode: UInt32 = 0o755) {
    addEntry(path, mode: 0o040000 | mode, content: [])
  }

  /// Adds a regular file.
  public mutating func addFile(_ path: String, content: [UInt8], mode: UInt32 = 0o644) {
    addEntry(path, mode: 0o100000 | mode, content: content)
  }

  /// Adds a symbolic link to `target`.
  public mutating func addSymlink(_ path: String, target: String) {
    addEntry(path, mode: 0o120777, content: Array(target.utf8))
  }

  /// Adds a character device node.
  public mutating func addCharacterDevice(_ path: String, major: UInt32, minor: UInt32, mode: UInt32 = 0o600) {
    addEntry(path, mode: 0o020000 | mode, content: [], deviceMajor: major, deviceMinor: minor)
  }

  /// The archive with its trailer, padded to 512 bytes.
  public func finished() -> [UInt8] {
    var archive = self
    archive.addEntry("TRAILER!!!", mode: 0, content: [])
    archive.bytes += Array(repeating: 0, count: (512 - archive.bytes.count % 512) % 512)
    return archive.bytes
  }

  private mutating func addEntry(
    _ path: String, mode: UInt32, content: [UInt8], deviceMajor: UInt32 = 0, deviceMinor: UInt32 = 0
  ) {
    let name = Array(path.utf8) + [0]
    let fields: [UInt32] = [
      nextInode, mode, 0, 0, 1, 0, UInt32(content.count), 0, 0, deviceMajor, deviceMinor, UInt32(name.count), 0,
    ]
    nextInode += 1
    bytes += Array("070701".utf8)
    for field in fields {
      let digits = String(field, radix: 16)
      bytes += Array((String(repeating: "0", count: 8 - digits.count) + digits).utf8)
    }
    bytes += name
    pad()
    bytes += content
    pad()
  }

  private mutating func pad() {
    bytes += Array(repeating: 0, count: (4 - bytes.count % 4) % 4)
  }
}
