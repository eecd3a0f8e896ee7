import Glibc
import GuestMemory
import KVM

/// A PC BIOS image (SeaBIOS's `bios-256k.bin`, or any image `--bios` names), placed as a PC's
/// chipset places it: mapped read-only so that it ends at 4 GiB — the reset vector at
/// 0xFFFFFFF0 is in its last 16 bytes — and copied whole into RAM just below 1 MiB (a 256 KiB
/// image at 0xC0000–0xFFFFF), the shadow RAM where the BIOS runs and keeps its data. On a PC
/// the BIOS makes that copy itself after unlocking the chipset's shadow RAM (PAM registers);
/// skvm's host bridge has none, so the copy is there from the start, as after the unlock.
public final class FirmwareROM: @unchecked Sendable {
  /// The firmware of `--boot` without `--bios`: Debian's `seabios` package.
  public static let defaultImagePath = "/usr/share/seabios/bios-256k.bin"
  /// An image is a whole number of these.
  public static let sizeUnit = 64 << 10
  /// The largest image: it must stay clear of KVM's identity map and TSS below it.
  public static let maximumSize = 256 << 10
  /// How much of the image's end is copied below 1 MiB (all of it: SeaBIOS's 32-bit code
  /// starts below 0xE0000 in a 256 KiB image).
  public static let lowAliasSize = 256 << 10
  /// The KVM memory slot of the high mapping (RAM's slots count up from 0).
  public static let slot: UInt32 = 256

  /// The image's bytes.
  public let image: [UInt8]
  private let host: UnsafeMutableRawPointer

  /// Checks `image` (read from `path`) is the size of a BIOS image and keeps a copy to map.
  public init(image: [UInt8], path: String) throws(FirmwareError) {
    guard !image.isEmpty, image.count % Self.sizeUnit == 0, image.count <= Self.maximumSize else {
      throw FirmwareError(
        "\(path) is \(image.count) bytes: not a BIOS image (a BIOS image is a whole number of 64 KiB, at most 256 KiB, e.g. /usr/share/seabios/bios-256k.bin)"
      )
    }
    guard let mapped = mmap(nil, image.count, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0),
      mapped != MAP_FAILED
    else { throw FirmwareError("no memory for the BIOS image \(path): \(String(cString: strerror(errno)))") }
    image.withUnsafeBytes { mapped.copyMemory(from: $0.baseAddress!, byteCount: image.count) }
    host = mapped
    self.image = image
  }

  deinit { munmap(host, image.count) }

  /// Where the high mapping starts: the image ends at 4 GiB.
  public var guestAddress: UInt64 { 0x1_0000_0000 - UInt64(image.count) }

  /// Maps the image read-only at `guestAddress` (guest writes then exit as MMIO, which a ROM
  /// ignores); where KVM cannot make a read-only slot, writable.
  public func map(into vm: KVMVirtualMachine) throws(KVMError) {
    do {
      try vm.setMemorySlot(
        Self.slot, guestAddress: guestAddress, size: UInt64(image.count), host: host, flags: .readOnly)
    } catch  where error.code == EINVAL {
      try vm.setMemorySlot(Self.slot, guestAddress: guestAddress, size: UInt64(image.count), host: host)
    }
  }

  /// Copies the image to RAM, ending at 1 MiB.
  public func copyLowAlias(into memory: GuestMemory) throws(GuestMemoryError) {
    let count = min(image.count, Self.lowAliasSize)
    try memory.write(Array(image.suffix(count)), to: 0x10_0000 - UInt64(count))
  }
}

/// A firmware image that cannot be used.
public struct FirmwareError: Error, CustomStringConvertible, Equatable {
  public let description: String
  public init(_ description: String) { self.description = description }
}
