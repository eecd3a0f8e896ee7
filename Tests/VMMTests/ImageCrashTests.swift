import Foundation
import Testing

/// A process writing to a qcow2 image is killed at random moments: the image must never
/// be corrupt (qemu-img check), and our check -r leaks must leave it clean.
@Suite(
  "qcow2 crash consistency", .serialized,
  .enabled(if: FileManager.default.isExecutableFile(atPath: "/usr/bin/qemu-img"), "needs qemu-img (qemu-utils)"))
struct ImageCrashTests {
  @Test("60 SIGKILLs during random allocating writes: no corruption ever; leaks repaired")
  func killedWriters() throws {
    let directory = try ImgCommandTests.scratch()
    defer { try? FileManager.default.removeItem(atPath: directory) }
    var generator = SystemRandomNumberGenerator()
    var leaksSeen = 0
    for round in 0..<60 {
      let image = directory + "/crash.qcow2"
      if round % 15 == 0 {
        let clusterSize = ["4096", "65536", "512", "2M"][round / 15]
        let created = try CommandLineTests.skvm([
          "img", "create", "-q", "-f", "qcow2", "-o", "cluster_size=\(clusterSize)", image, "64M",
        ])
        #expect(created.status == 0, "\(created.errors)")
      }
      let writer = Process()
      writer.executableURL = CommandLineTests.executable
      writer.arguments = [
        "img", "bench", "-w", "--random", "-c", "100000000", "-s", round % 2 == 0 ? "4K" : "80K",
        "-t", round % 3 == 0 ? "none" : "writeback", image,
      ]
      writer.standardOutput = FileHandle.nullDevice
      try writer.run()
      usleep(UInt32.random(in: 20_000...250_000, using: &generator))
      kill(writer.processIdentifier, SIGKILL)
      writer.waitUntilExit()
      let check = try ChildProcess.run(URL(fileURLWithPath: "/usr/bin/qemu-img"), ["check", image])
      #expect(check.status == 0 || check.status == 3, "round \(round): qemu-img check says \(check.output)")
      if check.status == 3 {
        leaksSeen += 1
        let repaired = try CommandLineTests.skvm(["img", "check", "-r", "leaks", image])
        #expect(repaired.status == 0, "round \(round): \(repaired.output)")
        let again = try ChildProcess.run(URL(fileURLWithPath: "/usr/bin/qemu-img"), ["check", image])
        #expect(again.status == 0, "round \(round): after repair, qemu-img check says \(again.output)")
      }
    }
    print("crash test: \(leaksSeen) of 60 kills left leaks, all repaired")
  }
}
