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
  static func runMeasuringPeak(_ path: String, _ arguments: [String]) throws -> (Int32, Int) {
    var pid: pid_t = 0
    let argv = ([path] + arguments).map { strdup($0) } + [nil]
    defer { for pointer in argv { free(pointer) } }
    var actions = posix_spawn_file_actions_t()
    posix_spawn_file_actions_init(&actions)
    defer { posix_spawn_file_actions_destroy(&actions) }
    posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0)
    guard posix_spawn(&pid, path, &actions, nil, argv, environ) == 0 else {
      throw POSIXError(.ENOENT)
    }
    var status: Int32 = 0
    var usage = rusage()
    wait4(pid, &status, 0, &usage)
    return ((status >> 8) & 0xFF, usage.ru_maxrss)
  }
}
