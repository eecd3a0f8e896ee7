import CSystemCalls
import Foundation
import Glibc

/// A set of host CPUs in libvirt's list syntax (`0-3,^2,6`), and thread affinity by it.
public enum CPUSet {
  /// The host's CPUs (configured), for checking lists.
  public static var hostCount: Int { max(1, sysconf(Int32(_SC_NPROCESSORS_CONF))) }

  /// The CPUs `text` names (ranges, single CPUs, `^N` exclusions), each below `limit`; nil when
  /// it is not such a list or names no CPU.
  public static func parse(_ text: String, limit: Int = hostCount) -> Set<Int>? {
    var included = Set<Int>()
    var excluded = Set<Int>()
    for item in text.split(separator: ",", omittingEmptySubsequences: false) {
      let trimmed = item.trimmingCharacters(in: .whitespaces)
      if trimmed.hasPrefix("^") {
        guard let cpu = Int(trimmed.dropFirst()), (0..<limit).contains(cpu) else { return nil }
        excluded.insert(cpu)
        continue
      }
      let bounds = trimmed.split(separator: "-", omittingEmptySubsequences: false)
      guard (1...2).contains(bounds.count), let low = Int(bounds[0]), let high = Int(bounds.last ?? ""),
        low <= high, low >= 0, high < limit
      else { return nil }
      included.formUnion(low...high)
    }
    let result = included.subtracting(excluded)
    return result.isEmpty ? nil : result
  }

  /// `cpus` as a list: `0-2,5`.
  public static func format(_ cpus: Set<Int>) -> String {
    var parts: [String] = []
    var sorted = cpus.sorted()[...]
    while let first = sorted.first {
      var last = first
      sorted = sorted.dropFirst()
      while sorted.first == last + 1 {
        last += 1
        sorted = sorted.dropFirst()
      }
      parts.append(first == last ? "\(first)" : "\(first)-\(last)")
    }
    return parts.joined(separator: ",")
  }

  /// Pins thread `tid` to `cpus`; nil, or why not.
  public static func pin(thread tid: Int32, to cpus: Set<Int>) -> String? {
    var mask = [UInt8](repeating: 0, count: 128)
    for cpu in cpus where cpu < mask.count * 8 { mask[cpu / 8] |= UInt8(1 << (cpu % 8)) }
    if csys_set_affinity(tid, mask, UInt32(mask.count)) != 0 { return String(cString: strerror(errno)) }
    return nil
  }

  /// The CPUs thread `tid` may run on, or nil.
  public static func affinity(of tid: Int32) -> Set<Int>? {
    var mask = [UInt8](repeating: 0, count: 128)
    guard csys_get_affinity(tid, &mask, UInt32(mask.count)) == 0 else { return nil }
    return Set((0..<mask.count * 8).filter { mask[$0 / 8] & UInt8(1 << ($0 % 8)) != 0 })
  }
}
