import Foundation
import Testing

/// `skvm` as a user runs it: exit statuses, messages, output.
@Suite("skvm command line", .serialized)
struct CommandLineTests {
  struct Result {
    let status: Int32
    let output: String
    let errors: String
  }

  static var executable: URL {
    // The test bundle sits beside the built products.
    URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().appendingPathComponent("skvm")
  }

  static func skvm(_ arguments: [String], interruptAfter: Double? = nil) throws -> Result {
    let result = try ChildProcess.run(executable, arguments) { process in
      if let interruptAfter {
        Thread.sleep(forTimeInterval: interruptAfter)
        process.interrupt()
      }
    }
    return Result(status: result.status, output: result.output, errors: result.errors)
  }

  @Test("skvm run --hello runs the built-in hello guest and exits 0")
  func hello() throws {
    let result = try Self.skvm(["run", "--hello"])
    #expect(result.status == 0, "\(result.errors)")
    #expect(result.output.contains("Hello from a SwiftKVM guest"))
  }

  @Test("--stats prints exit counts and time per reason")
  func stats() throws {
    let result = try Self.skvm(["run", "--hello", "--stats"])
    #expect(result.status == 0)
    #expect(result.errors.contains("io"))
    #expect(result.errors.contains("time in guest (KVM_RUN)"))
  }

  @Test("A probe's debug-exit value becomes the exit status")
  func flatLongProbe() throws {
    let path = FileManager.default.temporaryDirectory.appendingPathComponent("skvm-cli-hello-\(getpid()).bin")
    try Data(try ProbeBuilder.binary("hello")).write(to: path)
    defer { try? FileManager.default.removeItem(at: path) }
    let result = try Self.skvm(["run", "--flat", path.path, "--flat-entry", "long", "--cpus", "2"])
    #expect(result.status == 1, "\(result.errors)")
    #expect(result.output.contains("PASS running at CPL3"))
  }

  @Test("A triple fault exits 2 with the report on stderr")
  func tripleFault() throws {
    let path = FileManager.default.temporaryDirectory.appendingPathComponent("skvm-cli-tf-\(getpid()).bin")
    try Data(try ProbeBuilder.binary("triple_fault")).write(to: path)
    defer { try? FileManager.default.removeItem(at: path) }
    let result = try Self.skvm(["run", "--flat", path.path, "--flat-entry", "long"])
    #expect(result.status == 2)
    #expect(result.errors.contains("triple fault"))
    #expect(result.errors.contains("at RIP 0x") || result.errors.contains("not available"))
  }

  @Test("SIGINT stops a spinning guest: status 130 and where each vCPU was")
  func interrupt() throws {
    let path = FileManager.default.temporaryDirectory.appendingPathComponent("skvm-cli-spin-\(getpid()).bin")
    try Data([0xEB, 0xFE]).write(to: path)
    defer { try? FileManager.default.removeItem(at: path) }
    let result = try Self.skvm(["run", "--flat", path.path, "--cpus", "2"], interruptAfter: 0.5)
    #expect(result.status == 130)
    #expect(result.errors.contains("received SIGINT"))
    #expect(result.errors.contains("vCPU 0 was at RIP 0x10000"))
  }

  static let badInvocations: [([String], String)] = [
    (["run", "--hello", "--memory", "0"], "minimum is 1 MiB"),
    (["run", "--kernel", "/etc/hostname"], "is not a Linux bzImage"),
    (["run", "--hello", "--flat", "/tmp/x"], "give one of them"),
    (["run", "--memory", "10Q"], "unknown unit 'Q'"),
    (["run", "--cpus", "0"], "--cpus must be at least 1"),
    (["run", "--hello", "--cpus", "5000"], "between 1 and"),
    (["run", "--flat", "/nonexistent/x.bin"], "cannot read guest image '/nonexistent/x.bin'"),
    (["run", "--flat", "/dev/null"], "not a regular file"),
    (["run", "--flat-entry", "sideways"], "sideways"),
    (["run", "--hello", "--debug-exit-port", "70000"], "not a port number"),
  ]

  @Test("Bad input: one clear line on stderr and a non-zero status")
  func badInput() throws {
    for (arguments, phrase) in Self.badInvocations {
      let result = try Self.skvm(arguments)
      #expect(result.status != 0, "\(arguments) succeeded")
      #expect(result.errors.contains(phrase), "\(arguments): \(result.errors)")
    }
  }

  @Test("--version and --help")
  func versionAndHelp() throws {
    #expect(try Self.skvm(["--version"]).output.hasPrefix("skvm 0."))
    let help = try Self.skvm(["run", "--help"]).output
    #expect(help.contains("--flat-entry") && help.contains("Exit status"))
  }

  @Test("--disk with a missing file or a bad option fails before the guest starts, naming it")
  func badDisks() throws {
    let missing = try Self.skvm(["run", "--hello", "--disk", "/nonexistent/disk.img"])
    #expect(missing.status == 1 && missing.errors.contains("/nonexistent/disk.img"), "\(missing.errors)")
    #expect(!missing.output.contains("Hello"))
    let path = FileManager.default.temporaryDirectory.appendingPathComponent("skvm-twice-\(getpid()).raw").path
    try Data(count: 1 << 20).write(to: URL(fileURLWithPath: path))
    defer { try? FileManager.default.removeItem(atPath: path) }
    let twice = try Self.skvm(["run", "--hello", "--disk", path, "--disk", path])
    #expect(twice.status == 1 && twice.errors.contains("in use"), "\(twice.errors)")
    let option = try Self.skvm(["run", "--hello", "--disk", "/tmp/x.img,cache=maybe"])
    #expect(option.status != 0 && option.errors.contains("unknown option 'cache=maybe'"), "\(option.errors)")
    let notQCow2 = try Self.skvm(["run", "--hello", "--disk", "\(path),format=qcow2"])
    #expect(notQCow2.status == 1 && notQCow2.errors.contains("not a qcow2 image"), "\(notQCow2.errors)")
    let direct = try Self.skvm(["run", "--hello", "--disk", "\(path),cache=none"])
    // Accepted where the file system does O_DIRECT; else one clear sentence (the lane's overlay on 9p).
    #expect(
      (direct.status == 0 && direct.output.contains("Hello"))
        || (direct.status == 1 && direct.errors.contains("cache=none needs O_DIRECT")
          && direct.errors.contains("cache=writeback")),
      "\(direct.errors)")
    // A file this process may not write (immutable, which binds even root): refused unless readonly=on.
    if try ChildProcess.run(URL(fileURLWithPath: "/usr/bin/chattr"), ["+i", path]).status == 0 {
      defer { _ = try? ChildProcess.run(URL(fileURLWithPath: "/usr/bin/chattr"), ["-i", path]) }
      let refused = try Self.skvm(["run", "--hello", "--disk", path])
      #expect(refused.status == 1 && refused.errors.contains("readonly=on"), "\(refused.errors)")
      let readOnly = try Self.skvm(["run", "--hello", "--disk", "\(path),readonly=on"])
      #expect(readOnly.status == 0, "\(readOnly.errors)")
    }
  }
}
