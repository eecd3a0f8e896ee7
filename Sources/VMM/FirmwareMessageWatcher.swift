import Devices
import Glibc
import Synchronization

/// The console of a firmware boot, watched for SeaBIOS's "No bootable device." as it passes
/// through: the first time the firmware finds nothing to boot, skvm says on standard error what
/// the machine lacks, instead of leaving the user before a firmware that waits for ever.
final class FirmwareMessageWatcher: ConsoleOutput {
  static let marker = Array("No bootable device.".utf8)
  static let hint =
    "\nskvm: the firmware found nothing to boot: give a disk with a boot loader (--disk FILE), e.g. an installed "
    + "system's image or a hybrid ISO (--disk FILE.iso,readonly=on), or boot a kernel directly (--kernel FILE, "
    + "without --bios or --boot)\n"

  private let output: any ConsoleOutput
  /// How much of the marker the output has matched so far, and whether the hint was given.
  private let progress = Mutex<(matched: Int, hinted: Bool)>((0, false))

  init(_ output: any ConsoleOutput) {
    self.output = output
  }

  func write(_ bytes: UnsafeRawBufferPointer) {
    output.write(bytes)
    let found = progress.withLock { progress -> Bool in
      guard !progress.hinted else { return false }
      for byte in bytes {
        // The marker repeats no prefix of itself, so a mismatch restarts at its first byte.
        if byte == Self.marker[progress.matched] {
          progress.matched += 1
        } else {
          progress.matched = byte == Self.marker[0] ? 1 : 0
        }
        if progress.matched == Self.marker.count {
          progress.hinted = true
          return true
        }
      }
      return false
    }
    if found {
      var text = Array(Self.hint.utf8)
      _ = Glibc.write(STDERR_FILENO, &text, text.count)
    }
  }
}
