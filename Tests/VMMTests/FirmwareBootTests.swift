import Foundation
import Testing

/// `--bios`: a PC BIOS image mapped below 4 GiB with its end copied below 1 MiB, the boot vCPU
/// at the reset vector. The firmware here is a 64 KiB image the test assembles: its reset
/// vector jumps to F000:0000 (the copy below 1 MiB), which prints, reads fw_cfg's signature
/// through the ports and stops through the debug-exit port.
@Suite("Firmware boot")
struct FirmwareBootTests {
  /// The test firmware: "FW:" and fw_cfg's signature on COM1, then debug-exit 0x21 (status 67).
  static let image: [UInt8] = {
    let code: [UInt8] = [
      0xBA, 0xF8, 0x03,  // mov dx, 0x3f8
      0xB0, 0x46, 0xEE, 0xB0, 0x57, 0xEE, 0xB0, 0x3A, 0xEE,  // "FW:"
      0xBA, 0x10, 0x05, 0x31, 0xC0, 0xEF,  // mov dx, 0x510; xor ax, ax; out dx, ax (the signature)
      0xB9, 0x04, 0x00,  // mov cx, 4
      0xBA, 0x11, 0x05, 0xEC,  // mov dx, 0x511; in al, dx
      0xBA, 0xF8, 0x03, 0xEE,  // mov dx, 0x3f8; out dx, al
      0xE2, 0xF6,  // loop (four bytes)
      0xB0, 0x0A, 0xEE,  // "\n"
      0xB0, 0x21, 0xE6, 0xF4,  // out 0xf4, 0x21
      0xF4, 0xEB, 0xFD,  // hlt; jmp hlt
    ]
    var image = [UInt8](repeating: 0xFF, count: 64 << 10)
    image.replaceSubrange(0..<code.count, with: code)
    // The reset vector (0xFFFFFFF0, the image's last 16 bytes): jmp far F000:0000.
    image.replaceSubrange(0xFFF0..<0xFFF5, with: [0xEA, 0x00, 0x00, 0x00, 0xF0])
    return image
  }()

  static func write(_ bytes: [UInt8], _ name: String) throws -> String {
    let path = FileManager.default.temporaryDirectory.appendingPathComponent("skvm-\(getpid())-\(name)").path
    try Data(bytes).write(to: URL(fileURLWithPath: path))
    return path
  }

  @Test("The firmware starts at the reset vector, runs from its copy below 1 MiB and reads fw_cfg")
  func boots() throws {
    let path = try Self.write(Self.image, "bios.bin")
    defer { try? FileManager.default.removeItem(atPath: path) }
    let result = try RedTeamTests.skvm(["run", "--bios", path, "--memory", "32M", "--net", "none"])
    #expect(
      result.status == 67 && result.output.contains("FW:QEMU\n"),
      "status \(result.status): \(result.output) \(result.errors)")
  }

  @Test("A CD-ROM image without an ISO 9660 signature is attached with a warning; the firmware runs")
  func nonISOCDROM() throws {
    let path = try Self.write(Self.image, "bios.bin")
    let cd = try Self.write([UInt8](repeating: 0, count: 64 << 10), "cd.img")
    defer {
      try? FileManager.default.removeItem(atPath: path)
      try? FileManager.default.removeItem(atPath: cd)
    }
    let result = try RedTeamTests.skvm(["run", "--bios", path, "--cdrom", cd, "--memory", "32M", "--net", "none"])
    #expect(result.status == 67, "status \(result.status): \(result.errors)")
    #expect(
      result.errors.contains("has no ISO 9660 signature (CD001 at byte 32769); attached anyway"), "\(result.errors)")
  }

  @Test(
    "Bad --bios, --boot and --cdrom values (not a BIOS image, a missing file, an unknown boot device, a CD boot without a CD): one clear line each, no vCPU runs"
  )
  func refused() throws {
    let odd = try Self.write([UInt8](repeating: 0x90, count: 1000), "odd.bin")
    let large = try Self.write([UInt8](repeating: 0x90, count: 512 << 10), "large.bin")
    let good = try Self.write(Self.image, "good.bin")
    defer {
      try? FileManager.default.removeItem(atPath: good)
      try? FileManager.default.removeItem(atPath: odd)
      try? FileManager.default.removeItem(atPath: large)
    }
    let cases: [([String], String)] = [
      (["--bios", odd], "is 1000 bytes: not a BIOS image"),
      (["--bios", large], "is 524288 bytes: not a BIOS image"),
      (["--bios", "/nonexistent/bios.bin"], "cannot read guest image '/nonexistent/bios.bin'"),
      (["--bios", odd, "--kernel", odd], "give one of them"),
      (["--bios", odd, "--cmdline", "quiet"], "the firmware boots from the disks"),
      (["--boot", "order=x"], "'x' is not a boot device (c: first disk, d: CD-ROM, n: network)"),
      (["--boot", "order=cc"], "'c' is given twice"),
      (["--boot", "menu=maybe"], "menu=maybe: say on or off"),
      (["--boot", "reboot-timeout=soon"], "give milliseconds, or -1 to wait forever"),
      (["--boot", "speed=fast"], "unknown option 'speed'"),
      (["--boot", "order=d"], "give it an image with --cdrom FILE.iso"),
      (["--boot", "order=n"], "no network boot ROM"),
      (["--boot", "c", "--kernel", odd], "give one of them"),
      (["--cdrom", "/nonexistent/cd.iso", "--bios", good], "--cdrom '/nonexistent/cd.iso'"),
      (["--incoming", "file:/nonexistent", "--cdrom", odd], "leave out --boot and --cdrom"),
    ]
    for (arguments, expected) in cases {
      let result = try RedTeamTests.skvm(["run"] + arguments + ["--net", "none"])
      #expect(
        (result.status == 1 || result.status == 64) && result.errors.contains(expected),
        "\(arguments): status \(result.status): \(result.errors)")
    }
  }
}
