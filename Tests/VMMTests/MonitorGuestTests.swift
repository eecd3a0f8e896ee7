import Foundation
import Testing

/// The QMP monitor of `skvm run` against a busy probe guest, driven by the official
/// client (PyPI qemu.qmp, installed by scripts/setup) and by hostile raw sockets.
@Suite("QMP monitor with a running guest", .serialized)
struct MonitorGuestTests {
  /// The virtualenv scripts/setup makes, with qemu.qmp in it.
  static var python: String {
    let cache = ProcessInfo.processInfo.environment["XDG_CACHE_HOME"] ?? (NSHomeDirectory() + "/.cache")
    return cache + "/skvm/python/bin/python"
  }

  static func check(_ scenario: String, cpus: Int, extra: [String] = []) async throws -> (status: Int32, output: String)
  {
    guard FileManager.default.isExecutableFile(atPath: python) else {
      Issue.record("no \(python): run scripts/setup (it installs the qemu.qmp client the monitor tests use)")
      return (-1, "")
    }
    let probe = FileManager.default.temporaryDirectory.appendingPathComponent("skvm-busy-\(getpid())-\(scenario).bin")
    try Data(try ProbeBuilder.binary("busy")).write(to: probe)
    defer { try? FileManager.default.removeItem(at: probe) }
    let result = try await ChildProcess.run(
      URL(fileURLWithPath: python),
      [
        ProbeBuilder.repositoryRoot.appendingPathComponent("Tests/Monitor/qmp_check.py").path, "--scenario", scenario,
        "--skvm", CommandLineTests.executable.path, "--probe", probe.path, "--cpus", String(cpus),
      ] + extra, mergeErrors: true)
    return (result.status, result.output)
  }

  @Test("qemu.qmp: status across stop/cont, events, info kvm/registers/cpus, reset, powerdown, quit → 0")
  func lifecycle() async throws {
    let result = try await Self.check("lifecycle", cpus: 2)
    #expect(result.status == 0 && result.output.contains("qmp_check: lifecycle ok"), "\(result.output)")
  }

  @Test("Hostile clients get errors or are cut off; other clients and the guest carry on")
  func hostileClients() async throws {
    let result = try await Self.check("hostile", cpus: 2)
    #expect(result.status == 0 && result.output.contains("qmp_check: hostile ok"), "\(result.output)")
  }

  @Test("4 clients × random lifecycle commands (system_reset among them) all answered; the guest survives")
  func lifecycleStress() async throws {
    // CI's short form; SKVM_QMP_STRESS_COMMANDS=100000 for a long run.
    let commands = ProcessInfo.processInfo.environment["SKVM_QMP_STRESS_COMMANDS"] ?? "1200"
    let result = try await Self.check("stress", cpus: 2, extra: ["--commands", commands])
    #expect(result.status == 0 && result.output.contains("qmp_check: stress ok"), "\(result.output)")
  }

  @Test("Bad --qmp values and unusable socket paths fail before the guest starts, naming the problem")
  func badAddresses() async throws {
    let unparseable = try CommandLineTests.skvm(["run", "--hello", "--qmp", "pipe:/x"])
    #expect(unparseable.status != 0 && unparseable.errors.contains("'pipe:/x' is not a monitor address"))
    let missing = try CommandLineTests.skvm(["run", "--hello", "--qmp", "unix:/nonexistent-dir/q.sock"])
    #expect(missing.status == 1 && missing.errors.contains("the directory /nonexistent-dir does not exist"))
    #expect(!missing.output.contains("Hello"), "the guest never started")

    // A stale socket file (nobody listening) is replaced; a live one is refused.
    let path = FileManager.default.temporaryDirectory.appendingPathComponent("skvm-qmp-\(getpid()).sock").path
    defer { unlink(path) }
    let listener = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
    var address = sockaddr_un()
    address.sun_family = sa_family_t(AF_UNIX)
    withUnsafeMutableBytes(of: &address.sun_path) { $0.copyBytes(from: Array(path.utf8)) }
    let bound = withUnsafePointer(to: &address) {
      $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
        bind(listener, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
      }
    }
    #expect(bound == 0 && listen(listener, 1) == 0)
    let live = try CommandLineTests.skvm(["run", "--hello", "--qmp", "unix:\(path)"])
    #expect(live.status == 1 && live.errors.contains("in use by a live process"), "\(live.errors)")
    close(listener)  // the file stays, stale now
    let stale = try CommandLineTests.skvm(["run", "--hello", "--qmp", "unix:\(path),server=on,wait=off"])
    #expect(stale.status == 0 && stale.output.contains("Hello"), "\(stale.errors)")
    #expect(access(path, F_OK) != 0, "the socket file is removed when skvm exits")
  }

  @Test("skvm monitor runs HMP commands against a running machine; quit ends it with status 0")
  func humanMonitorClient() async throws {
    let probe = FileManager.default.temporaryDirectory.appendingPathComponent("skvm-busy-\(getpid())-hmp.bin")
    try Data(try ProbeBuilder.binary("busy")).write(to: probe)
    defer { try? FileManager.default.removeItem(at: probe) }
    let socket = FileManager.default.temporaryDirectory.appendingPathComponent("skvm-hmp-\(getpid()).sock").path
    let machine = Process()
    machine.executableURL = CommandLineTests.executable
    machine.arguments = ["run", "--flat-entry", "long", "--flat", probe.path, "--qmp", "unix:\(socket)"]
    machine.standardOutput = FileHandle.nullDevice
    try machine.run()
    defer { if machine.isRunning { machine.terminate() } }
    var waited = 0
    while access(socket, F_OK) != 0 && waited < 200 {
      usleep(50_000)
      waited += 1
    }
    let result = try CommandLineTests.skvm([
      "monitor", socket, "-c", "info kvm", "-c", "stop", "-c", "info status", "-c", "cont", "-c", "quit",
    ])
    #expect(result.status == 0, "\(result.errors)")
    #expect(result.output.contains("kvm support: enabled"))
    #expect(result.output.contains("VM status: paused"))
    machine.waitUntilExit()
    #expect(machine.terminationStatus == 0)
    let missing = try CommandLineTests.skvm(["monitor", socket + ".absent"])
    #expect(missing.status == 1 && missing.errors.contains("cannot connect to the monitor"))
  }

  @Test("--qmp tcp with wait=on holds the guest until a client connects, on loopback")
  func tcpWaitForClient() async throws {
    let probe = FileManager.default.temporaryDirectory.appendingPathComponent("skvm-busy-\(getpid())-tcp.bin")
    try Data(try ProbeBuilder.binary("busy")).write(to: probe)
    defer { try? FileManager.default.removeItem(at: probe) }
    let port = 20000 + Int(getpid() % 20000)
    let console = Pipe()
    let errors = Pipe()
    let machine = Process()
    machine.executableURL = CommandLineTests.executable
    machine.arguments = [
      "run", "--flat-entry", "long", "--flat", probe.path, "--qmp", "tcp::\(port),server=on,wait=on",
    ]
    machine.standardOutput = console
    machine.standardError = errors
    try machine.run()
    defer { if machine.isRunning { machine.terminate() } }
    // Until a client connects the guest has not started: not a byte on its console.
    var waitingSaid = false
    for _ in 0..<100 where !waitingSaid {
      usleep(50_000)
      waitingSaid = (errors.fileHandleForReading.availableData.count > 0)
    }
    #expect(waitingSaid, "skvm says it is waiting for a monitor client")
    usleep(300_000)
    let flags = fcntl(console.fileHandleForReading.fileDescriptor, F_GETFL)
    _ = fcntl(console.fileHandleForReading.fileDescriptor, F_SETFL, flags | O_NONBLOCK)
    var byte: UInt8 = 0
    #expect(read(console.fileHandleForReading.fileDescriptor, &byte, 1) < 0, "no guest output before a client connects")
    let result = try CommandLineTests.skvm(["monitor", "tcp:127.0.0.1:\(port)", "-c", "info status", "-c", "quit"])
    #expect(result.status == 0 && result.output.contains("VM status: running"), "\(result.errors)")
    machine.waitUntilExit()
    #expect(machine.terminationStatus == 0)
  }
}
