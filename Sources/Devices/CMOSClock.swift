import Glibc
import Synchronization

/// The guest-visible state of the CMOS RTC and its RAM.
public struct CMOSState: Sendable, Equatable, Codable {
  /// The selected register (port 0x70, without the NMI-mask bit).
  public var index: UInt8 = 0
  /// The 128 bytes of CMOS RAM (time registers are computed on read).
  public var ram: [UInt8] = Array(repeating: 0, count: 128)
  /// Seconds the guest's clock is ahead of the host's (it set the time).
  public var offsetSeconds: Int64 = 0

  public init() {
    ram[0x0A] = 0x26  // 32.768 kHz time base, 1024 Hz periodic rate
    ram[0x0B] = 0x02  // 24-hour mode, BCD
    ram[0x0D] = 0x80  // RAM and time valid
  }
}

/// The MC146818 CMOS real-time clock at ports 0x70/0x71, reading the host's time (UTC).
///
/// Time registers follow the host clock plus whatever offset the guest set; no
/// update-in-progress ever shows, and no RTC interrupts are generated.
public final class CMOSClock: IODevice {
  public static let base: UInt64 = 0x70
  public static let size: UInt64 = 2
  /// The century register, named in the FADT.
  public static let centuryRegister: UInt8 = 0x32

  public let name = "rtc"
  private let state = Mutex(CMOSState())
  private let now: @Sendable () -> Int64

  public init(now: @escaping @Sendable () -> Int64 = { Int64(time(nil)) }) {
    self.now = now
  }

  public func read(offset: UInt64, width: Int) -> UInt64 {
    state.withLock { cmos in
      guard offset == 1 else { return UInt64(cmos.index) }
      return UInt64(value(of: cmos.index, cmos))
    }
  }

  public func write(offset: UInt64, width: Int, value: UInt64) {
    let byte = UInt8(truncatingIfNeeded: value)
    state.withLock { cmos in
      if offset == 0 {
        cmos.index = byte & 0x7F
        return
      }
      switch cmos.index {
      case 0x00...0x09, Self.centuryRegister:
        var fields = calendar(of: cmos)
        setField(cmos.index, to: decode(byte, cmos), in: &fields)
        cmos.offsetSeconds = seconds(from: fields) - now()
      case 0x0A: cmos.ram[0x0A] = byte & 0x7F  // UIP is read-only
      case 0x0C, 0x0D: break  // read-only
      default: cmos.ram[Int(cmos.index)] = byte
      }
    }
  }

  private struct Fields {
    var second = 0, minute = 0, hour = 0, weekday = 0, day = 1, month = 1, year = 0, century = 20
  }

  private func calendar(of cmos: CMOSState) -> Fields {
    var clock = time_t(now() + cmos.offsetSeconds)
    var parts = tm()
    gmtime_r(&clock, &parts)
    let year = Int(parts.tm_year) + 1900
    return Fields(
      second: Int(parts.tm_sec), minute: Int(parts.tm_min), hour: Int(parts.tm_hour), weekday: Int(parts.tm_wday) + 1,
      day: Int(parts.tm_mday), month: Int(parts.tm_mon) + 1, year: year % 100, century: year / 100)
  }

  private func seconds(from fields: Fields) -> Int64 {
    var parts = tm()
    parts.tm_sec = Int32(fields.second)
    parts.tm_min = Int32(fields.minute)
    parts.tm_hour = Int32(fields.hour)
    parts.tm_mday = Int32(fields.day)
    parts.tm_mon = Int32(fields.month - 1)
    parts.tm_year = Int32(fields.century * 100 + fields.year - 1900)
    return Int64(timegm(&parts))
  }

  private func setField(_ register: UInt8, to value: Int, in fields: inout Fields) {
    switch register {
    case 0x00: fields.second = value
    case 0x02: fields.minute = value
    case 0x04: fields.hour = value
    case 0x06: fields.weekday = value
    case 0x07: fields.day = value
    case 0x08: fields.month = value
    case 0x09: fields.year = value
    case Self.centuryRegister: fields.century = value
    default: break  // alarm registers: not kept
    }
  }

  private func value(of register: UInt8, _ cmos: CMOSState) -> UInt8 {
    let fields = calendar(of: cmos)
    switch register {
    case 0x00: return encode(fields.second, cmos)
    case 0x02: return encode(fields.minute, cmos)
    case 0x04: return encode(fields.hour, cmos)
    case 0x06: return encode(fields.weekday, cmos)
    case 0x07: return encode(fields.day, cmos)
    case 0x08: return encode(fields.month, cmos)
    case 0x09: return encode(fields.year, cmos)
    case Self.centuryRegister: return encode(fields.century, cmos)
    case 0x0C: return 0  // no interrupt flags
    default: return cmos.ram[Int(register & 0x7F)]
    }
  }

  private func binaryMode(_ cmos: CMOSState) -> Bool { cmos.ram[0x0B] & 0x04 != 0 }

  private func encode(_ value: Int, _ cmos: CMOSState) -> UInt8 {
    binaryMode(cmos) ? UInt8(value) : UInt8((value / 10) << 4 | value % 10)
  }

  private func decode(_ byte: UInt8, _ cmos: CMOSState) -> Int {
    binaryMode(cmos) ? Int(byte) : Int(byte >> 4) * 10 + Int(byte & 0x0F)
  }
}

extension CMOSClock: StatefulDevice {
  public static let stateVersion = 1

  public func saveState() -> CMOSState { state.withLock { $0 } }

  public func restoreState(_ saved: CMOSState) throws(DeviceStateError) {
    guard saved.ram.count == 128 else { throw DeviceStateError("CMOS RAM of \(saved.ram.count) bytes, not 128") }
    state.withLock { $0 = saved }
  }
}
