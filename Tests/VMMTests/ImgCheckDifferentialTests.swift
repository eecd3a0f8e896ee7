import Foundation
import Testing

/// `skvm img check` against qemu-img as the oracle, over many mutated images, and its memory
/// bound, measured on the process itself.
@Suite(
  "skvm img check: differential and bounds", .serialized,
  .enabled(if: FileManager.default.isExecutableFile(atPath: "/usr/bin/qemu-img"), "needs qemu-img (qemu-utils)"))
struct ImgCheckDifferentialTests {
  @Test("Differential: on mutated images our verdict is never milder than qemu-img's, our repair as good as its own")
  func differential() throws {
    // CI's short run; SKVM_DIFFERENTIAL_CASES=5000 for a long one.
    let cases = ProcessInfo.processInfo.environment["SKVM_DIFFERENTIAL_CASES"] ?? "150"
    let script = ProbeBuilder.repositoryRoot.appendingPathComponent("Tests/Images/check_differential.py")
    let result = try ChildProcess.run(
      URL(fileURLWithPath: "/usr/bin/python3"),
      [script.path, "--skvm", CommandLineTests.executable.path, "--cases", cases], mergeErrors: true)
    print(result.output.split(separator: "\n").last ?? "")
    #expect(result.status == 0, "\(result.output)")
  }

  @Test("check needs about 2 bytes per cluster of file: a 64 GiB sparse image with 512-byte clusters in < 300 MiB")
  func checkMemory() throws {
    let directory = try ImgCommandTests.scratch()
    defer { try? FileManager.default.removeItem(atPath: directory) }
    let path = directory + "/sparse.qcow2"
    _ = try ImgCommandTests.qemuImg(["create", "-q", "-f", "qcow2", "-o", "cluster_size=512", path, "1M"])
    #expect(truncate(path, 64 << 30) == 0)
    let (status, peakKiB) = try Self.runMeasuringPeak(CommandLineTests.executable.path, ["img", "check", path])
    #expect(status == 0 || status == 3, "check exits \(status)")
    // 128 Mi clusters: qemu-img needs 263 MiB here.
    #expect(peakKiB < 300 << 10, "peak RSS \(peakKiB) KiB")
    #expect(peakKiB > 100 << 10, "the check did count every cluster of the file (peak \(peakKiB) KiB)")
  }

  /// Runs a program to its end; its exit status and peak resident memory (KiB), from wait4.
  ///
  /// The program is forked from a small Python process, not spawned from this one: a
  /// vfork-style spawn shares this (large, busy) test process's memory until exec, and Linux
  /// folds that memory's peak into the child's `ru_maxrss`.
  static func runMeasuringPeak(_ path: String, _ arguments: [String]) throws -> (Int32, Int) {
    let launcher = """
      import os, sys
      pid = os.fork()
      if pid == 0:
          os.dup2(os.open("/dev/null", os.O_WRONLY), 1)
          os.execv(sys.argv[1], sys.argv[1:])
      _, status, usage = os.wait4(pid, 0)
      print(os.waitstatus_to_exitcode(status), usage.ru_maxrss)
      """
    let result = try ChildProcess.run(
      URL(fileURLWithPath: "/usr/bin/python3"), ["-c", launcher, path] + arguments, mergeErrors: false)
    let fields = result.output.split(whereSeparator: \.isWhitespace)
    guard result.status == 0, fields.count == 2, let status = Int32(fields[0]), let peak = Int(fields[1]) else {
      throw POSIXError(.EIO)
    }
    return (status, peak)
  }
}
