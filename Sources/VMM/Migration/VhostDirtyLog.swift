import CSystemCalls
import Glibc
import GuestMemory

/// The dirty log vhost-net writes while a live migration runs: a bit per guest-physical page
/// from address 0 to the end of RAM (page 8·i + j at bit j of byte i, the kernel's layout),
/// set by the kernel for every page it writes — received frames and used rings, which
/// neither KVM's log (the guest's writes) nor skvm's own write log sees. One log serves every
/// vhost-net device of the machine; it lives as long as the machine.
final class VhostDirtyLog: @unchecked Sendable {
  private let words: UnsafeMutablePointer<UInt64>
  private let wordCount: Int
  private let regions: [(guestAddress: UInt64, size: UInt64)]

  /// Maps a zeroed log covering `memory`'s RAM.
  init(memory: GuestMemory) throws(VirtualMachineError) {
    regions = memory.regions.map { ($0.guestAddress, $0.size) }
    let end = regions.map { $0.guestAddress + $0.size }.max() ?? 0
    wordCount = Int((end / GuestMemory.pageSize + 63) / 64)
    let mapped = mmap(nil, wordCount * 8, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0)
    guard let mapped, mapped != MAP_FAILED else {
      throw .migration(
        "no memory for vhost-net's dirty log (\(wordCount * 8) bytes): \(String(cString: strerror(errno)))")
    }
    words = mapped.bindMemory(to: UInt64.self, capacity: wordCount)
  }

  deinit { munmap(words, wordCount * 8) }

  /// The host address the kernel is given (VHOST_SET_LOG_BASE).
  var base: UInt64 { UInt64(UInt(bitPattern: words)) }

  /// Guest-physical addresses of the pages logged since the last call, cleared as they are
  /// taken (a page the kernel logs meanwhile shows up next time). Bits outside RAM are dropped.
  func take() -> [UInt64] {
    var pages: [UInt64] = []
    for word in 0..<wordCount where words[word] != 0 {
      var bits = csys_atomic_take64(words + word)
      while bits != 0 {
        let address = UInt64(word * 64 + bits.trailingZeroBitCount) * GuestMemory.pageSize
        bits &= bits - 1
        if regions.contains(where: { address >= $0.guestAddress && address - $0.guestAddress < $0.size }) {
          pages.append(address)
        }
      }
    }
    return pages
  }
}
