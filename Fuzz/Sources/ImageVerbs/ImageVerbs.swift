import DiskImage
import Glibc

/// What the image fuzz targets share: the input written to a file on tmpfs (the verbs sync as
/// they would on a disk, which costs nothing there), the backing file seed overlays name, and
/// each `skvm img` verb as the library runs it. Every verb must end in a result or a
/// `DiskImageError`: never a crash, a hang, or memory beyond bounds.
public enum ImageVerbs {
  /// Writes the input to a file of this process's own and runs `body` on its path.
  public static func withInput(_ data: UnsafePointer<UInt8>, _ size: Int, _ body: (String) -> Void) {
    _ = backing
    let path = "/dev/shm/skvm-fuzz-\(getpid()).qcow2"
    let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0o600)
    guard fd >= 0 else { return }
    let written = Glibc.write(fd, data, size)
    close(fd)
    defer { unlink(path) }
    if written == size { body(path) }
  }

  /// info, snapshot -l, map, and convert (every byte read, written into a fresh image).
  public static func read(_ path: String) {
    _ = try? ImageInfo.read(path, forceShare: true)
    guard let image = try? DiskImage.open(path, format: .qcow2, forceShare: true) else { return }
    defer { image.close() }
    if let qcow2 = image as? QCow2Image { _ = try? qcow2.snapshots }
    _ = try? DiskImage.map(image)
    let output = path + ".out"
    defer { unlink(output) }
    var options = QCow2CreateOptions(size: min(image.size, 1 << 20))
    options.clusterSize = 65536
    guard let converted = try? QCow2Image.create(at: output, options: options) else { return }
    readAll(image, limit: 1 << 20) { bytes, offset in _ = try? converted.write(bytes, at: offset) }
    converted.close()
  }

  /// check, then check -r all, then check again.
  public static func check(_ path: String) {
    _ = try? DiskImage.openForCheck(path, writable: false).check()
    if let image = try? DiskImage.openForCheck(path, writable: true) {
      _ = try? image.check(repair: .all)
      image.close()
    }
    _ = try? DiskImage.openForCheck(path, writable: false).check()
  }

  /// Opened for writing: reads, a write, write-zeroes, discard, and snapshot create/apply/delete.
  public static func write(_ path: String) {
    guard let image = try? DiskImage.open(path, format: .qcow2, writable: true) else { return }
    defer { image.close() }
    readAll(image, limit: 1 << 20)
    guard image.size >= 8192 else { return }
    _ = try? image.write([UInt8](repeating: 0x5A, count: 4096), at: 0)
    guard let qcow2 = image as? QCow2Image else { return }
    _ = try? qcow2.writeZeroes(at: 4096, length: 4096)
    _ = try? qcow2.discard(at: 0, length: 4096)
    _ = try? qcow2.createSnapshot(named: "fuzz")
    for snapshot in (try? qcow2.snapshots) ?? [] {
      _ = try? qcow2.applySnapshot(snapshot.id)
      _ = try? qcow2.deleteSnapshot(snapshot.id)
    }
  }

  static func readAll(_ image: any BlockBackend, limit: UInt64, _ sink: ([UInt8], UInt64) -> Void = { _, _ in }) {
    var offset: UInt64 = 0
    let end = min(image.size, limit)
    while offset < end {
      let count = Int(min(65536, end - offset))
      if let bytes = try? image.read(count: count, at: offset) { sink(bytes, offset) }
      offset += UInt64(count)
    }
  }

  /// The backing file the seed overlays name, made once per process.
  static let backing: Void = {
    let path = "/tmp/skvm-fuzz-backing.qcow2"
    guard let image = try? QCow2Image.create(at: path, options: QCow2CreateOptions(size: 1 << 20)) else { return }
    _ = try? image.write([UInt8](repeating: 0x42, count: 65536), at: 0)
    image.close()
  }()
}
