import CSystemCalls
import Glibc
import Synchronization

/// An open image file: positioned reads and writes that complete fully or throw.
/// Reads past the end of the file return zeros, as QEMU's file layer does.
final class ImageFile: @unchecked Sendable {
  let path: String
  /// -1 once closed (I/O then fails with EBADF rather than touching a reused descriptor).
  private(set) var fd: Int32
  let writable: Bool
  /// With `CacheMode.none`, a second descriptor opened with O_DIRECT: aligned transfers go
  /// through it, past the host page cache; anything unaligned uses `fd` (the kernel keeps the
  /// two coherent). -1 otherwise.
  private(set) var directFD: Int32 = -1
  /// O_DIRECT transfers must have address, offset and length aligned to the device's logical
  /// block; 4 KiB covers 512-byte and 4Kn devices alike.
  static let directAlignment = 4096
  /// Whether anything was written since the last flush began: a flush with nothing new to make
  /// durable skips its fdatasync (each costs a device cache flush, milliseconds on some disks —
  /// a live migration's switch-over flushes with the guest stopped).
  let unflushed = Atomic<Bool>(true)

  /// Opens `path` and locks it as QEMU does (`ImageLock`): a writer's lock excludes other
  /// writers and readers, a reader's lock excludes writers, so two processes — skvm or QEMU —
  /// never write one image at once and nobody reads an image another process is writing.
  /// With `create`, the file is made (or emptied, once locked).
  /// `forceShare` (qemu-img's -U, read-only only) takes no lock: for looking at an image a
  /// running VM has open, knowing its contents may be changing.
  init(
    path: String, writable: Bool, create: Bool = false, cache: CacheMode = .writeback, forceShare: Bool = false
  ) throws(DiskImageError) {
    self.path = path
    self.writable = writable
    let flags = (writable ? O_RDWR : O_RDONLY) | (create ? O_CREAT : 0)
    // Never blocks in open (a FIFO would wait for a writer forever): the type is checked first.
    var fd = csys_open_data_file(path, flags, 0o644, nil)
    if fd == -2 { throw .invalid(path: path, reason: "is not a regular file or block device") }
    guard fd >= 0 else { throw .io(path: path, operation: create ? "create" : "open", errno: errno) }
    // An image one process writes is not read by another (its view would be inconsistent),
    // and nothing writes what others read.
    if !(forceShare && !writable) {
      do throws(ImageLock.Conflict) { try ImageLock.acquire(fd, writable: writable) } catch {
        Glibc.close(fd)
        throw .invalid(path: path, reason: Self.describe(error, writable: writable))
      }
    }
    if create && ftruncate(fd, 0) != 0 {
      let code = errno
      Glibc.close(fd)
      throw .io(path: path, operation: "truncate", errno: code)
    }
    if create {
      // ext4 writes back a file truncated to zero when that descriptor is closed
      // (auto_da_alloc), which would make the end of a whole conversion wait for the disk:
      // let that happen now, while the file is empty, and work through a fresh descriptor.
      let fresh = open(path, O_RDWR | O_CLOEXEC)
      Glibc.close(fd)
      guard fresh >= 0 else { throw .io(path: path, operation: "open", errno: errno) }
      do throws(ImageLock.Conflict) { try ImageLock.acquire(fresh, writable: true) } catch {
        Glibc.close(fresh)
        throw .invalid(path: path, reason: "was opened by another process while it was created")
      }
      fd = fresh
    }
    if cache == .none {
      directFD = open(path, (writable ? O_RDWR : O_RDONLY) | O_CLOEXEC | csys_o_direct)
      guard directFD >= 0 else {
        let code = errno
        Glibc.close(fd)
        throw .invalid(
          path: path,
          reason: "cache=none needs O_DIRECT, which its file system refuses (\(String(cString: strerror(code))));"
            + " use cache=writeback")
      }
    }
    self.fd = fd
  }

  deinit { close() }

  /// Lets go of the image's lock while keeping it open (a live migration's switch-over: the
  /// destination takes it next), or takes it again; false when another process holds it now.
  func setLocked(_ locked: Bool) -> Bool {
    guard fd >= 0 else { return false }
    guard locked else {
      ImageLock.release(fd)
      return true
    }
    do throws(ImageLock.Conflict) { try ImageLock.acquire(fd, writable: writable) } catch { return false }
    return true
  }

  /// What a lock conflict means for the user, and what to do.
  private static func describe(_ conflict: ImageLock.Conflict, writable: Bool) -> String {
    switch conflict {
    case .heldByAnother(let permission) where permission == .write:
      return writable
        ? "is in use by another process (skvm or QEMU) that writes to it; stop that one first"
        : "is being written by another process (skvm or QEMU); stop that one first, "
          + "or look anyway with -U (force-share)"
    case .heldByAnother(let permission):
      return "is in use by another process (skvm or QEMU) holding its \"\(permission.name)\" permission; "
        + "stop that one first"
    case .unsharedByAnother(let permission):
      return "is in use by another process (skvm or QEMU) that lets nobody else \(permission.name) it meanwhile "
        + "(a reader lets nobody write); stop that one first"
    }
  }

  /// Closes the file now (releasing its lock); later I/O fails cleanly.
  func close() {
    if directFD >= 0 { Glibc.close(directFD) }
    directFD = -1
    guard fd >= 0 else { return }
    Glibc.close(fd)
    fd = -1
  }

  /// The descriptor for a transfer: the O_DIRECT one when there is one and everything is aligned.
  @inline(__always)
  private func descriptor(_ address: UnsafeRawPointer, _ count: Int, _ offset: UInt64) -> Int32 {
    directFD >= 0 && Self.isDirectAligned(address, count, offset) ? directFD : fd
  }

  /// Whether an O_DIRECT transfer may take this buffer at this offset (all three aligned).
  @inline(__always)
  static func isDirectAligned(_ address: UnsafeRawPointer?, _ count: Int, _ offset: UInt64) -> Bool {
    let mask = directAlignment - 1
    return Int(bitPattern: address) & mask == 0 && count & mask == 0 && Int(offset & UInt64(mask)) == 0
  }

  /// The file's length in bytes.
  var length: UInt64 {
    var status = stat()
    guard fstat(fd, &status) == 0 else { return 0 }
    if (status.st_mode & S_IFMT) == S_IFBLK {
      return UInt64(max(0, lseek(fd, 0, SEEK_END)))
    }
    return UInt64(status.st_size)
  }

  /// Bytes the file occupies on disk.
  var allocatedBytes: UInt64 {
    var status = stat()
    guard fstat(fd, &status) == 0 else { return 0 }
    return UInt64(status.st_blocks) * 512
  }

  func read(into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64) throws(DiskImageError) {
    guard let base = buffer.baseAddress else { return }
    let fd = descriptor(base, buffer.count, offset)
    var done = 0
    while done < buffer.count {
      guard offset <= UInt64(Int64.max) - UInt64(buffer.count) else {
        throw .invalid(path: path, reason: "offset \(offset) is beyond any file")
      }
      let count = pread(fd, base + done, buffer.count - done, off_t(offset) + off_t(done))
      if count < 0 {
        if errno == EINTR { continue }
        throw .io(path: path, operation: "read at \(offset + UInt64(done))", errno: errno)
      }
      if count == 0 {
        (base + done).initializeMemory(as: UInt8.self, repeating: 0, count: buffer.count - done)
        return
      }
      done += count
    }
  }

  func read(count: Int, at offset: UInt64) throws(DiskImageError) -> [UInt8] {
    var bytes = [UInt8](repeating: 0, count: count)
    var failure: DiskImageError?
    bytes.withUnsafeMutableBytes { buffer in
      do throws(DiskImageError) { try read(into: buffer, at: offset) } catch { failure = error }
    }
    if let failure { throw failure }
    return bytes
  }

  /// `count` big-endian 64-bit table entries at `offset` (zeros past the end of the file).
  func readEntries(count: Int, at offset: UInt64) throws(DiskImageError) -> [UInt64] {
    let bytes = try read(count: count * 8, at: offset)
    return bytes.withUnsafeBytes { raw in
      (0..<count).map { UInt64(bigEndian: raw.loadUnaligned(fromByteOffset: $0 * 8, as: UInt64.self)) }
    }
  }

  /// Writes all of `bytes` at `offset`.
  func write(_ bytes: UnsafeRawBufferPointer, at offset: UInt64) throws(DiskImageError) {
    guard let base = bytes.baseAddress else { return }
    let fd = descriptor(base, bytes.count, offset)
    var done = 0
    while done < bytes.count {
      let count = pwrite(fd, base + done, bytes.count - done, off_t(offset) + off_t(done))
      if count < 0 {
        if errno == EINTR { continue }
        throw .io(path: path, operation: "write at \(offset + UInt64(done))", errno: errno)
      }
      done += count
    }
    unflushed.store(true, ordering: .releasing)
  }

  func write(_ bytes: [UInt8], at offset: UInt64) throws(DiskImageError) {
    var failure: DiskImageError?
    bytes.withUnsafeBytes { buffer in
      do throws(DiskImageError) { try write(buffer, at: offset) } catch { failure = error }
    }
    if let failure { throw failure }
  }

  /// Whether metadata ordering points sync the file (safe against power loss) or only keep
  /// the order of writes (safe against the process being killed, which loses no written data).
  var syncsAtOrderingPoints = true

  /// Where one metadata update must be durable before the next is written.
  func orderingPoint() throws(DiskImageError) {
    if syncsAtOrderingPoints { try flush() }
  }

  /// Makes every write so far durable (fdatasync); at once when nothing was written since the
  /// last flush. A write that lands while it syncs is covered by the next flush.
  func flush() throws(DiskImageError) {
    guard unflushed.exchange(false, ordering: .acquiringAndReleasing) else { return }
    guard fdatasync(fd) == 0 else {
      unflushed.store(true, ordering: .releasing)
      throw .io(path: path, operation: "fdatasync", errno: errno)
    }
  }

  /// Sets the file's length.
  func truncate(to length: UInt64) throws(DiskImageError) {
    guard ftruncate(fd, off_t(length)) == 0 else { throw .io(path: path, operation: "truncate", errno: errno) }
    unflushed.store(true, ordering: .releasing)
  }

  /// fallocate(2) with `mode` over `[offset, offset + length)`; false when the file system
  /// cannot (the caller falls back to writing).
  func allocate(mode: Int32, at offset: UInt64, length: UInt64) -> Bool {
    guard csys_fallocate(fd, mode, off_t(offset), off_t(length)) == 0 else { return false }
    unflushed.store(true, ordering: .releasing)
    return true
  }

  /// Creates (or truncates) a file for a new image.
  static func create(path: String) throws(DiskImageError) -> ImageFile {
    try ImageFile(path: path, writable: true, create: true)
  }
}
