import Foundation
import Testing

/// `skvm kit --add`: host programs in the default guest's initramfs.
@Suite(
  "skvm kit --add", .enabled(if: LinuxGuestHost.unavailableReason == nil, "the default guest cannot be built here"))
struct KitCommandTests {
  @Test(
    "A host program goes into a copy of the initramfs with its libraries and loader, after the kit's own files; a second call finds it cached; an unknown program is named"
  )
  func addProgram() throws {
    let result = try CommandLineTests.skvm(["kit", "--add", "env"])
    #expect(result.status == 0, "\(result.errors)")
    let line = result.output.split(separator: "\n").first { $0.hasPrefix("initrd: ") }
    let initrd = try #require(line.map { String($0.dropFirst("initrd: ".count)) })
    #expect(initrd.contains("initrd-with-"), "not the kit's own initramfs: \(initrd)")
    // gzip reads every member of the file: the kit's archive, then the added one.
    let listing = try ChildProcess.run(URL(fileURLWithPath: "/bin/sh"), ["-c", "gzip -dc '\(initrd)'"])
    let names = listing.output
    for name in ["bin/busybox", "usr/bin/env", "lib/x86_64-linux-gnu/libc.so.6", "lib64/ld-linux-x86-64.so.2"] {
      #expect(names.contains(name), "\(name) is missing")
    }
    #expect(names.range(of: "bin/busybox")!.lowerBound < names.range(of: "usr/bin/env")!.lowerBound)
    let again = try CommandLineTests.skvm(["kit", "--add", "/usr/bin/env"])
    #expect(again.output.contains("initrd: \(initrd)"), "cached: \(again.output)")
    let unknown = try CommandLineTests.skvm(["kit", "--add", "no-such-program-skvm"])
    #expect(unknown.status != 0)
    #expect(unknown.errors.contains("no program 'no-such-program-skvm' on PATH"), "\(unknown.errors)")
  }
}
