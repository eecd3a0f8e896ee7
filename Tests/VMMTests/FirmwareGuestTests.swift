import Foundation
import GuestKit
import Testing

/// Firmware boot end to end (SeaBIOS runs in ring 0, so on this host in the lane): an ISO that
/// grub-mkrescue builds from the default guest's kernel and initramfs, GRUB on the serial
/// console, boots as a virtio-blk disk; the guest sees skvm's ACPI tables (installed by the
/// firmware from fw_cfg); its reboot goes back through the firmware; a disk with nothing to
/// boot gets SeaBIOS's message and skvm's hint.
@Suite(
  "Firmware guests", .serialized,
  .enabled(if: LinuxGuestHost.unavailableReason == nil, Comment(rawValue: LinuxGuestHost.unavailableReason ?? "")),
  .enabled(
    if: FileManager.default.fileExists(atPath: "/usr/bin/grub-mkrescue")
      && FileManager.default.fileExists(atPath: "/usr/share/seabios/bios-256k.bin"),
    "needs grub-mkrescue (grub-pc-bin, xorriso, mtools) and seabios: scripts/setup installs them"))
struct FirmwareGuestTests {
  struct Failure: Error, CustomStringConvertible { let description: String }

  static let directory = "/tmp/skvm-firmware-\(getpid())"

  /// The ISO (built once): GRUB with a menu entry that boots the default guest on ttyS0.
  static let iso: Result<String, Failure> = {
    do {
      let kit = try GuestKit.prepare()
      let root = directory + "/iso"
      try FileManager.default.createDirectory(atPath: root + "/boot/grub", withIntermediateDirectories: true)
      try? FileManager.default.removeItem(atPath: root + "/boot/vmlinuz")
      try? FileManager.default.removeItem(atPath: root + "/boot/initrd.gz")
      try FileManager.default.copyItem(atPath: kit.kernelPath, toPath: root + "/boot/vmlinuz")
      try FileManager.default.copyItem(atPath: kit.initrdPath, toPath: root + "/boot/initrd.gz")
      let menu = """
        serial --unit=0 --speed=115200
        terminal_input serial
        terminal_output serial
        set timeout=0
        menuentry "skvm default guest" {
          echo "GRUB-LOADS-THE-KERNEL"
          linux /boot/vmlinuz \(GuestKit.defaultCommandLine)
          initrd /boot/initrd.gz
        }

        """
      try menu.write(toFile: root + "/boot/grub/grub.cfg", atomically: true, encoding: .utf8)
      let path = directory + "/guest.iso"
      let made = try ChildProcess.run(
        URL(fileURLWithPath: "/usr/bin/grub-mkrescue"), ["-o", path, root], mergeErrors: true)
      guard made.status == 0 else { return .failure(Failure(description: "grub-mkrescue: \(made.output)")) }
      // A disk with nothing on it: SeaBIOS finds no boot sector.
      let empty = directory + "/empty.raw"
      try Data(count: 1 << 20).write(to: URL(fileURLWithPath: empty))
      return .success(path)
    } catch {
      return .failure(Failure(description: "\(error)"))
    }
  }()

  static let batch = LinuxGuestHost.SessionBatch([
    .init(
      name: "firmware-disk",
      steps: [
        "expect:SeaBIOS (version", "expect:Booting from Hard Disk", "expect:GRUB-LOADS-THE-KERNEL",
        "expect:SKVM-GUEST-READY",
        // The FADT the guest found is skvm's (OEM id SKVM), linked into place by the firmware.
        "send:echo oem=$(head -c 16 /sys/firmware/acpi/tables/FACP | tail -c 6 | tr -d ' ') cpus=$(nproc)",
        "expect:oem=SKVM cpus=2",
        "send:echo ecam=$(wc -c < /sys/bus/pci/devices/0000:00:01.0/config)", "expect:ecam=4096",
        // The guest's reboot goes back through the firmware and GRUB, to the shell again.
        "send:reboot -f", "expect:SeaBIOS (version", "expect:GRUB-LOADS-THE-KERNEL", "expect:SKVM-GUEST-READY",
        "send:poweroff -f", "exit:0",
      ],
      arguments: [
        "run", "--boot", "order=c", "--cpus", "2", "--disk", directory + "/guest.iso,readonly=on", "--net", "none",
      ], timeout: 400),
    .init(
      name: "firmware-nothing-to-boot",
      steps: [
        "expect:No bootable device.", "expect:skvm: the firmware found nothing to boot", "qmp:quit", "exit:0",
      ],
      arguments: [
        "run", "--boot", "order=c,reboot-timeout=-1", "--disk", directory + "/empty.raw", "--net", "none",
        "--debugcon", directory + "/seabios.log",
      ], monitor: true, timeout: 200),
  ])

  @Test(
    "A GRUB ISO boots as a virtio-blk disk through SeaBIOS to the default guest's shell, which sees skvm's ACPI tables; its reboot comes back through the firmware"
  )
  func isoBootsAsDisk() throws {
    _ = try Self.iso.get()
    let session = try Self.batch.session("firmware-disk")
    #expect(session.passed, "\(session.transcript)")
  }

  @Test("A disk with no boot sector: SeaBIOS says 'No bootable device.' and skvm says what the machine lacks")
  func nothingToBoot() throws {
    _ = try Self.iso.get()
    let session = try Self.batch.session("firmware-nothing-to-boot")
    #expect(session.passed, "\(session.transcript)")
  }
}
