import Foundation
import Testing

/// virtio-net from a probe guest (native at CPL3 on PVM hosts) against a peer on a tap in a
/// network namespace of the test's own (Tests/Network/probe_peer.py). Needs root and
/// /dev/net/tun (CI and the lane have both).
@Suite(
  "virtio-net probe", .serialized,
  .enabled(
    if: getuid() == 0 && access("/dev/net/tun", R_OK | W_OK) == 0,
    "taps and network namespaces need root and /dev/net/tun"))
struct ProbeNetworkTests {
  static func peer(vhost: Bool, queues: Int = 1) async throws -> ChildProcess.Result {
    let probe = FileManager.default.temporaryDirectory.appendingPathComponent("skvm-probe-vnet-\(getpid()).bin")
    try Data(try ProbeBuilder.binary("virtio_net")).write(to: probe)
    defer { try? FileManager.default.removeItem(at: probe) }
    let script = ProbeBuilder.repositoryRoot.appendingPathComponent("Tests/Network/probe_peer.py").path
    return try await ChildProcess.run(
      URL(fileURLWithPath: "/usr/bin/unshare"),
      ["-n", "python3", script, "--skvm", CommandLineTests.executable.path, "--probe", probe.path]
        + (vhost ? ["--vhost"] : []) + ["--queues", "\(queues)"], mergeErrors: true)
  }

  static let checks = [
    "virtio-net found on bus 0", "features negotiated, three queues up", "MAC address in 52:54:00", "link up",
    "host: PASS 64 frames from the probe, byte-exact and in order", "64 frames sent",
    "1000 frames in a burst, byte-exact, in order, none lost", "a 5000-byte frame over three mergeable buffers",
    "promiscuous off (control queue)", "the filter kept another host's frame out, ours came",
    "a transmit buffer outside guest memory: NEEDS_RESET", "up again after reset",
    "host: PASS a frame from the probe after its reset", "sends again after reset",
    "host: PASS the probe passed",
  ]

  @Test(
    "Frames both ways byte-exact, 1,000 in a burst with none lost, a frame over mergeable buffers, the MAC filter, and a hostile chain the device survives"
  )
  func frames() async throws {
    let run = try await Self.peer(vhost: false)
    #expect(run.status == 0, "\(run.output)")
    for check in Self.checks { #expect(run.output.contains(check), "\(check): \(run.output)") }
    #expect(!run.output.contains("FAIL"), "\(run.output)")
  }

  @Test(
    "The same with vhost=on: the kernel moves the frames where /dev/vhost-net exists, skvm (with a notice) where not")
  func vhost() async throws {
    let run = try await Self.peer(vhost: true)
    #expect(run.status == 0, "\(run.output)")
    for check in Self.checks { #expect(run.output.contains(check), "\(check): \(run.output)") }
    if access("/dev/vhost-net", R_OK | W_OK) == 0 {
      #expect(run.output.contains("vhost-net moves the frames"), "\(run.output)")
    } else {
      #expect(run.output.contains("vhost=on: /dev/vhost-net is missing"), "\(run.output)")
    }
  }

  @Test(
    "A multiqueue tap (queues=2) with a driver that knows no multiqueue: the control queue is queue 2 and every frame from the host comes through the one pair it uses"
  )
  func multiqueueTapSinglePairDriver() async throws {
    let run = try await Self.peer(vhost: false, queues: 2)
    #expect(run.status == 0, "\(run.output)")
    for check in Self.checks { #expect(run.output.contains(check), "\(check): \(run.output)") }
    #expect(run.output.contains("1 of 2 queue pairs"), "\(run.output)")
  }
}
