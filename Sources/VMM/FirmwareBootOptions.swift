/// How the firmware picks what to boot, as QEMU's `-boot order=…,menu=on,reboot-timeout=…`
/// says it: handed to SeaBIOS through fw_cfg (`bootorder`, the boot menu flag,
/// `etc/boot-fail-wait`).
public struct FirmwareBootOptions: Sendable, Equatable, Codable {
  /// A kind of boot device, by QEMU's letter.
  public enum Device: Character, Sendable, Equatable, Codable, CaseIterable {
    /// The first disk (`c`).
    case disk = "c"
    /// The CD-ROM drive (`d`).
    case cdrom = "d"
    /// The network (`n`).
    case network = "n"
  }

  /// Devices to try first, in order; the firmware tries the others after them.
  public var order: [Device]
  /// Whether the firmware offers its boot menu (Esc on the console).
  public var menu: Bool
  /// Milliseconds to wait after finding nothing to boot before trying again; nil waits forever (QEMU's default).
  public var rebootTimeout: UInt32?

  /// Why a `--boot` value could not be parsed; the message names the part.
  public struct ParseError: Error, CustomStringConvertible, Equatable {
    public let description: String
    init(_ description: String) { self.description = description }
  }

  public init(order: [Device] = [], menu: Bool = false, rebootTimeout: UInt32? = nil) {
    self.order = order
    self.menu = menu
    self.rebootTimeout = rebootTimeout
  }

  /// Parses `order=cd,menu=on,reboot-timeout=5000` (any of the parts; a bare `cd` is an order).
  public init(parsing text: String) throws(ParseError) {
    self.init()
    for part in text.split(separator: ",", omittingEmptySubsequences: false) {
      let pair = part.split(separator: "=", maxSplits: 1).map(String.init)
      let (key, value) = pair.count == 2 ? (pair[0], pair[1]) : ("order", pair[0])
      switch key {
      case "order":
        guard !value.isEmpty else { throw ParseError("--boot order: give letters: c (disk), d (CD-ROM), n (network)") }
        for letter in value {
          guard let device = Device(rawValue: letter) else {
            throw ParseError(
              "--boot order=\(value): '\(letter)' is not a boot device (c: first disk, d: CD-ROM, n: network)")
          }
          guard !order.contains(device) else { throw ParseError("--boot order=\(value): '\(letter)' is given twice") }
          order.append(device)
        }
      case "menu":
        guard let on = ["on": true, "off": false][value] else {
          throw ParseError("--boot menu=\(value): say on or off")
        }
        menu = on
      case "reboot-timeout":
        if value == "-1" {
          rebootTimeout = nil
        } else {
          guard let milliseconds = UInt32(value), milliseconds < 0xFFFF_FFFF else {
            throw ParseError("--boot reboot-timeout=\(value): give milliseconds, or -1 to wait forever")
          }
          rebootTimeout = milliseconds
        }
      default:
        throw ParseError("--boot: unknown option '\(key)' (order=, menu=, reboot-timeout=)")
      }
    }
  }
}
