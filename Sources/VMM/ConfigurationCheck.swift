import CSystemCalls
import Glibc
import Machine

/// The checks a configuration must pass before any KVM object is created.
enum ConfigurationCheck {
  /// More vCPUs than this would need x2APIC ids, which the flat boot path does not set up.
  static let cpuLimit = 254

  static func memorySize(_ size: UInt64) throws(VirtualMachineError) {
    let minimum = VirtualMachineConfiguration.minimumMemorySize
    if size < minimum { throw .invalidMemorySize(size, reason: "the minimum is 1 MiB (e.g. --memory 256M)") }
    if size % 4096 != 0 { throw .invalidMemorySize(size, reason: "it must be a multiple of 4 KiB") }
    let host = UInt64(sysconf(Int32(_SC_PHYS_PAGES))) &* UInt64(sysconf(Int32(_SC_PAGESIZE)))
    if host > 0, size > host {
      throw .invalidMemorySize(size, reason: "the host has only \(host >> 20) MiB of RAM")
    }
  }

  /// Reads and checks what the boot source names.
  static func bootPayload(_ boot: BootSource, ramBelowHole: UInt64) throws(VirtualMachineError) -> BootPayload {
    let available = FlatBinaryBoot.capacity(ramBelowHole: ramBelowHole)
    switch boot {
    case .flatImage(let bytes, _):
      if bytes.isEmpty { throw .imageEmpty(path: "(in-memory image)") }
      if UInt64(bytes.count) > available {
        throw .imageTooLarge(path: "(in-memory image)", size: UInt64(bytes.count), available: available)
      }
      return .flat(bytes)
    case .flat(let path, _):
      return .flat(try readFile(path, limit: available))
    case .linux(let kernelPath, let initrdPath, _):
      let kernelBytes = try readFile(kernelPath, limit: ramBelowHole)
      let initrd = try initrdPath.map { (path) throws(VirtualMachineError) in try readFile(path, limit: ramBelowHole) }
      do {
        if ELFKernel.isELF(kernelBytes) { return .linuxELF(try ELFKernel(kernelBytes, name: kernelPath), initrd) }
        return .linux(try BzImage(kernelBytes, name: kernelPath), initrd)
      } catch {
        throw .linux(error)
      }
    case .firmware:
      return .firmware  // the image is read by `firmware(_:)`, for restores too
    }
  }

  /// The BIOS image a firmware boot source names, read and checked; nil for other sources.
  static func firmware(_ boot: BootSource) throws(VirtualMachineError) -> FirmwareROM? {
    guard case .firmware(let path) = boot else { return nil }
    if path == FirmwareROM.defaultImagePath && access(path, F_OK) != 0 {
      throw .firmware(
        FirmwareError(
          "\(path) is missing: install Debian's seabios package (apt-get install seabios), or give a BIOS image with --bios FILE"
        ))
    }
    let image = try readFile(path, limit: UInt64(FirmwareROM.maximumSize) * 64)
    do { return try FirmwareROM(image: image, path: path) } catch { throw .firmware(error) }
  }

  /// Reads a whole regular file of at most `limit` bytes, without Foundation.
  static func readFile(_ path: String, limit: UInt64) throws(VirtualMachineError) -> [UInt8] {
    // Never blocks in open (a FIFO would wait for a writer): the file's type is checked first.
    let fd = csys_open_data_file(path, O_RDONLY, 0, nil)
    if fd == -2 { throw .imageUnreadable(path: path, reason: "not a regular file") }
    if fd < 0 { throw .imageUnreadable(path: path, reason: String(cString: strerror(errno))) }
    defer { close(fd) }
    var status = stat()
    if fstat(fd, &status) != 0 { throw .imageUnreadable(path: path, reason: String(cString: strerror(errno))) }
    if status.st_mode & S_IFMT != S_IFREG { throw .imageUnreadable(path: path, reason: "not a regular file") }
    let size = UInt64(status.st_size)
    if size == 0 { throw .imageEmpty(path: path) }
    if size > limit { throw .imageTooLarge(path: path, size: size, available: limit) }
    var bytes = [UInt8](repeating: 0, count: Int(size))
    var done = 0
    while done < bytes.count {
      let count = bytes.withUnsafeMutableBytes { buffer in
        guard let base = buffer.baseAddress else { return 0 }
        return read(fd, base + done, buffer.count - done)
      }
      if count < 0 {
        if errno == EINTR { continue }
        throw .imageUnreadable(path: path, reason: String(cString: strerror(errno)))
      }
      if count == 0 { break }
      done += count
    }
    if done < bytes.count { throw .imageUnreadable(path: path, reason: "file shrank while being read") }
    return bytes
  }
}

/// What a boot source's files turned out to hold, read and validated.
enum BootPayload {
  case flat([UInt8])
  case linux(BzImage, [UInt8]?)
  case linuxELF(ELFKernel, [UInt8]?)
  /// Firmware: the ROM is mapped with RAM, its low copy made at boot.
  case firmware
}
