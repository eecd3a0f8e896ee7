import Glibc

/// The columns QEMU's `info snapshots` and `qemu-img snapshot -l` share: the date in local
/// time and the VM clock as hours:minutes:seconds.milliseconds.
public enum SnapshotListFormat {
  /// "2026-11-30 19:31:00", local time.
  public static func date(_ seconds: some BinaryInteger) -> String {
    var time = time_t(truncatingIfNeeded: seconds)
    var parts = tm()
    localtime_r(&time, &parts)
    return cFormat(
      "%04d-%02d-%02d %02d:%02d:%02d", parts.tm_year + 1900, parts.tm_mon + 1, parts.tm_mday, parts.tm_hour,
      parts.tm_min, parts.tm_sec)
  }

  /// "00:01:05.250" for 65.25 s of VM clock.
  public static func vmClock(nanoseconds: UInt64) -> String {
    let seconds = nanoseconds / 1_000_000_000
    return cFormat(
      "%02llu:%02llu:%02llu.%03llu", seconds / 3600, seconds / 60 % 60, seconds % 60, nanoseconds / 1_000_000 % 1000)
  }
}
