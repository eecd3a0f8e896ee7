import Foundation

/// A private skvmd instance for a test (its own state and runtime directories) and `skvm ctl`
/// against it; domains run a tiny real-mode guest that prints "ok" and halts.
final class ManagementHarness: @unchecked Sendable {
  let directory: URL
  var daemon: Process?
  static let binaries = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()

  var socket: String { directory.appendingPathComponent("run/skvm-sock").path }
  var readOnlySocket: String { directory.appendingPathComponent("run/skvm-sock-ro").path }
  var stateDirectory: URL { directory.appendingPathComponent("state") }
  /// A guest that prints "ok", then halts with interrupts off (idle, until destroyed).
  var haltGuest: URL { directory.appendingPathComponent("halt.bin") }

  init() throws {
    // Short: unix socket paths are limited to 108 bytes.
    directory = URL(fileURLWithPath: "/tmp/skvmd-test-\(UUID().uuidString.prefix(8))")
    try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
    let code: [UInt8] = [
      0xBA, 0xF8, 0x03, 0xB0, 0x6F, 0xEE, 0xB0, 0x6B, 0xEE, 0xB0, 0x0A, 0xEE, 0xFA, 0xF4, 0xEB, 0xFD,
    ]
    try Data(code).write(to: haltGuest)
  }

  deinit {
    daemon?.terminate()
    // Whatever still runs of this test's domains.
    _ = try? ChildProcess.run(URL(fileURLWithPath: "/usr/bin/pkill"), ["-9", "-f", directory.path])
    try? FileManager.default.removeItem(at: directory)
  }

  /// Starts the daemon and waits for its socket.
  func startDaemon(_ extraArguments: [String] = []) throws {
    let process = Process()
    process.executableURL = Self.binaries.appendingPathComponent("skvmd")
    process.arguments =
      [
        "--state-dir", stateDirectory.path, "--runtime-dir", directory.appendingPathComponent("run").path,
        "--skvm", Self.binaries.appendingPathComponent("skvm").path,
      ] + extraArguments
    let log = directory.appendingPathComponent("skvmd.log")
    _ = FileManager.default.createFile(atPath: log.path, contents: nil)
    let handle = try FileHandle(forWritingTo: log)
    handle.seekToEndOfFile()
    process.standardOutput = handle
    process.standardError = handle
    try process.run()
    daemon = process
    let deadline = Date().addingTimeInterval(30)
    while !FileManager.default.fileExists(atPath: socket) || ctlSync(["list"]).status != 0 {
      guard Date() < deadline, process.isRunning else {
        throw HarnessError(description: "skvmd did not come up: \(daemonLog)")
      }
      Thread.sleep(forTimeInterval: 0.05)
    }
  }

  /// Stops the daemon with `signal` and waits for it to exit.
  func stopDaemon(signal: Int32 = SIGTERM) {
    guard let daemon else { return }
    kill(daemon.processIdentifier, signal)
    daemon.waitUntilExit()
    self.daemon = nil
  }

  /// How the daemon ended, if it has (for failure messages).
  var daemonEnding: String {
    guard let daemon, !daemon.isRunning else { return "" }
    let how = daemon.terminationReason == .uncaughtSignal ? "signal" : "status"
    return " [skvmd ended: \(how) \(daemon.terminationStatus); its log:\n\(daemonLog.suffix(3000))]"
  }

  var daemonLog: String {
    (try? String(contentsOf: directory.appendingPathComponent("skvmd.log"), encoding: .utf8)) ?? ""
  }

  func domainLog(_ name: String) -> String {
    (try? String(contentsOf: stateDirectory.appendingPathComponent("log/\(name).log"), encoding: .utf8)) ?? ""
  }

  /// Writes a domain definition running the halt guest; returns its path.
  func writeDefinition(_ name: String, extra: String = "", devices: String = "", memory: Int = 32) throws -> String {
    let xml = """
      <domain type='kvm' xmlns:skvm='https://swiftkvm.dev/schemas/domain/1.0'>
        <name>\(name)</name>
        <memory unit='MiB'>\(memory)</memory>
        <os><type>hvm</type><skvm:flat entry='real'>\(haltGuest.path)</skvm:flat></os>
        \(extra)
        <devices>\(devices)</devices>
      </domain>
      """
    let path = directory.appendingPathComponent("\(name).xml")
    try Data(xml.utf8).write(to: path)
    return path.path
  }

  /// `skvm ctl -c SOCKET ARGUMENTS` (through `skvm`, as a user types it).
  func ctl(_ arguments: [String], readOnly: Bool = false) async throws -> ChildProcess.Result {
    let result = try await ChildProcess.run(
      Self.binaries.appendingPathComponent("skvm"), ["ctl", "-c", readOnly ? readOnlySocket : socket] + arguments)
    guard result.status != 0 else { return result }
    return ChildProcess.Result(status: result.status, output: result.output, errors: result.errors + daemonEnding)
  }

  /// `skvm ctl ARGUMENTS` with `input` on its standard input, which stays open `linger`
  /// seconds after the input was written (the guest's answer comes meanwhile).
  func ctl(_ arguments: [String], input: [UInt8], linger: Double) async throws -> ChildProcess.Result {
    let process = Process()
    process.executableURL = Self.binaries.appendingPathComponent("skvm-ctl")
    process.arguments = ["-c", socket] + arguments
    let stdin = Pipe()
    let stdout = Pipe()
    process.standardInput = stdin
    process.standardOutput = stdout
    process.standardError = stdout
    try process.run()
    try stdin.fileHandleForWriting.write(contentsOf: Data(input))
    try await Task.sleep(for: .seconds(linger))
    try stdin.fileHandleForWriting.close()
    let output = try await withCheckedThrowingContinuation { continuation in
      Thread.detachNewThread {
        let data = stdout.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        continuation.resume(returning: String(decoding: data, as: UTF8.self))
      }
    }
    return ChildProcess.Result(status: process.terminationStatus, output: output, errors: "")
  }

  func ctlSync(_ arguments: [String]) -> ChildProcess.Result {
    (try? ChildProcess.run(Self.binaries.appendingPathComponent("skvm-ctl"), ["-c", socket] + arguments))
      ?? ChildProcess.Result(status: -1, output: "", errors: "could not run skvm-ctl")
  }

  /// The pid of the `skvm run` process of domain `name`, from dominfo's log path being unique
  /// per test and the process's command line.
  func vmmPid(_ name: String) -> Int32? {
    let result = try? ChildProcess.run(
      URL(fileURLWithPath: "/usr/bin/pgrep"), ["-f", "--", "--name \(name) --qmp unix:\(directory.path)"])
    return result.flatMap { Int32($0.output.split(separator: "\n").first ?? "") }
  }

  /// True while `pid` runs (a zombie no longer does: a domain found after a daemon restart is
  /// not the new daemon's child, and its reaper may be slow).
  static func isRunning(_ pid: Int32) -> Bool {
    guard let text = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
      let close = text.lastIndex(of: ")")
    else { return false }
    return text[text.index(after: close)...].split(separator: " ").first != "Z"
  }

  /// A connected unix stream socket to `path`.
  static func connectUnix(_ path: String) throws -> Int32 {
    var address = sockaddr_un()
    address.sun_family = sa_family_t(AF_UNIX)
    withUnsafeMutableBytes(of: &address.sun_path) { raw in
      for (index, byte) in path.utf8.enumerated() where index < raw.count - 1 { raw[index] = byte }
    }
    let fd = Glibc.socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
    let connected = withUnsafePointer(to: &address) {
      $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
        Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
      }
    }
    guard fd >= 0, connected == 0 else { throw HarnessError(description: "cannot connect to \(path)") }
    return fd
  }

  struct HarnessError: Error, CustomStringConvertible {
    let description: String
  }
}
