import Foundation
import Testing

/// skvmd with the default guest where Linux runs (the lane here): a lane boot of its own, so
/// that it runs beside the serialized Linux suite rather than after it.
@Suite(
  "Management daemon with a Linux guest",
  .enabled(if: LinuxGuestHost.unavailableReason == nil, Comment(rawValue: LinuxGuestHost.unavailableReason ?? "")))
struct ManagementLinuxTests {
  static let directory = "/tmp/skvm-managed-\(getpid())"
  static let binaries = CommandLineTests.executable.deletingLastPathComponent().path
  static let socket = directory + "/run/skvm-sock"
  static let ctl = "\(binaries)/skvm-ctl -c \(socket)"
  static let domainXML = directory + "/lin.xml"
  /// Starts the daemon in the background (where the guest runs) and waits for its socket.
  static let startDaemon =
    "(\(binaries)/skvmd --state-dir \(directory) --runtime-dir \(directory)/run --skvm \(binaries)/skvm "
    + "> \(directory)/skvmd.log 2>&1 &) && i=0 && "
    + "while [ ! -S \(socket) ] && [ $i -lt 200 ]; do sleep 0.1; i=$((i+1)); done"

  static let batch = LinuxGuestHost.SessionBatch(
    [
      .init(
        name: "managed",
        steps: [
          "expect:Connected to domain 'lin'", "expect:SKVM-GUEST-READY", "send:echo managed-$((6*7))",
          "expect:managed-42", "run:\(ctl) domstate --reason lin", "expect:running (booted)",
          "run:\(ctl) shutdown --timeout 120 lin", "expect:is being shutdown", "exit:0",
          // The daemon stops by its pid file (a pattern would match this batch's own shell).
          "host:\(ctl) domstate --reason lin; kill $(cat \(directory)/run/skvmd.pid)",
          "expect:shut off (shutdown)",
        ],
        arguments: ["-c", startDaemon + " && \(ctl) define \(domainXML) && exec \(ctl) start --console lin"],
        timeout: 300, program: "/bin/sh")
    ], workDirectory: directory,
    prepare: {
      try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
      let domain = """
        <domain type='kvm'><name>lin</name><memory unit='MiB'>256</memory><vcpu>1</vcpu>
        <on_poweroff>destroy</on_poweroff><on_reboot>restart</on_reboot></domain>
        """
      try Data(domain.utf8).write(to: URL(fileURLWithPath: domainXML))
    })

  @Test(
    "skvmd: a defined domain boots the default guest, console reaches its shell, shutdown (ACPI) shuts it off with reason shutdown"
  )
  func managedDomain() async throws {
    let session = try await Self.batch.session("managed")
    #expect(session.passed, "\(session.transcript)")
  }
}
