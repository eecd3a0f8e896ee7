import Foundation
import GuestKit
import Testing

/// The default guest on the network, in one lane boot: user networking (DHCP, a host HTTP
/// server reached as 10.0.2.2, hostfwd into the guest), a tap in a network namespace of the
/// test's own (1,000 pings, none lost), a multiqueue tap with vhost-net (pings and iperf3 both
/// ways, across a pause), and two guests on one Linux bridge.
@Suite(
  "Linux guests on the network", .serialized,
  .enabled(if: LinuxGuestHost.unavailableReason == nil, Comment(rawValue: LinuxGuestHost.unavailableReason ?? "")))
struct LinuxNetworkTests {
  /// Taps, bridges and namespaces need root (the lane runs as root).
  static var canUseTaps: Bool { LinuxGuestHost.usesLane || getuid() == 0 }

  @Test(
    "User networking: DHCP, a file from a host HTTP server, hostfwd to a server in the guest; a tap in a namespace answers 1,000 pings; two guests on a bridge reach each other"
  )
  func network() async throws {
    let skvm = CommandLineTests.executable.path
    let port = 18_000 + Int(getpid() % 1000)
    let directory = "/tmp/skvm-net-\(getpid())"
    // The default guest with iperf3 in it.
    let iperf = try GuestKit.prepare().initrd(adding: ["iperf3"])
    // User networking, with the host's HTTP server on loopback and a forward into the guest.
    let fetch = "wget -q -O - http://10.0.2.2:\(port)/file.txt; echo FETCH=$?"
    let client =
      "python3 -c \"import urllib.request; print(urllib.request.urlopen('http://127.0.0.1:\(port + 1)/index.html', timeout=30).read().decode())\""
    let user = LinuxGuestHost.sessionCommand(
      "user-net",
      steps: [
        "expect:SKVM-GUEST-READY", "send:\(fetch)", "expect:served-by-the-host", "expect:FETCH=0",
        "send:mkdir -p /www && echo served-by-the-guest > /www/index.html && httpd -p 8080 -h /www && echo HTTPD=up",
        "expect:HTTPD=up", "run:\(client)", "expect:served-by-the-guest",
        // The monitor: the filter Linux set, the NIC and its back end, the link taken down and up.
        "qmp:query-rx-filter {\"name\": \"net0\"}", "expect:\"main-mac\": \"52:54:00:aa:bb:cc\"",
        "expect:\"33:33:00:00:00:01\"", "expect:\"promiscuous\": false",
        "hmp:info network", "expect:net0: index=0,type=nic,model=virtio-net-pci,macaddr=52:54:00:aa:bb:cc",
        "expect:type=user,hostfwd=tcp:127.0.0.1:\(port + 1)-10.0.2.15:8080",
        "qmp:set_link {\"name\": \"net0\", \"up\": false}",
        "send:sleep 0.5; echo carrier=$(cat /sys/class/net/eth0/carrier)",
        "expect:carrier=0", "hmp:set_link net0 on", "send:sleep 0.5; echo carrier=$(cat /sys/class/net/eth0/carrier)",
        "expect:carrier=1", "send:\(fetch)", "expect:FETCH=0",
        // iperf3 both ways to the host's server: its end closes while libslirp still writes
        // (a SIGPIPE once killed skvm there).
        "send:iperf3 -c 10.0.2.2 -p \(port + 2) -t 2 | grep receiver; echo IPERF=$?", "expect:IPERF=0",
        "send:iperf3 -c 10.0.2.2 -p \(port + 2) -t 2 -R | grep receiver; echo REVERSE=$?", "expect:REVERSE=0",
        "send:poweroff -f", "exit:0",
      ],
      skvm: [
        "run", "--initrd", iperf, "--net", "user,hostfwd=tcp::\(port + 1)-:8080,mac=52:54:00:aa:bb:cc", "--stats",
      ], monitor: true,
      timeout: 300)
    var line =
      "mkdir -p \(directory) && echo served-by-the-host > \(directory)/file.txt && "
      + "{ python3 -m http.server \(port) --bind 127.0.0.1 --directory \(directory) >/dev/null 2>&1 & server=$!; } && "
      + "{ iperf3 -s -p \(port + 2) >/dev/null 2>&1 & iperf=$!; } && "
      + "sleep 1 && \(user); status=$?; kill $server $iperf; [ $status = 0 ]"
    if Self.canUseTaps {
      // A tap skvm attaches to (created by the test) in a namespace of its own.
      let tap = LinuxGuestHost.sessionCommand(
        "tap",
        steps: [
          "expect:SKVM-GUEST-READY",
          "send:ip addr add 192.168.77.2/24 dev eth0; ping -c 1000 -i 0.002 -q 192.168.77.1; echo PING=$?",
          "expect:1000 packets transmitted, 1000 packets received", "expect:PING=0",
          "send:poweroff -f", "exit:0",
        ],
        skvm: ["run", "--net", "tap,ifname=skvmtap0", "--stats"], timeout: 300)
      // A multiqueue tap (two pairs, one per vCPU) with vhost-net moving the frames: pings,
      // iperf3 both ways with two streams, and a pause in between.
      let vhost = LinuxGuestHost.sessionCommand(
        "vhost",
        steps: [
          "expect:SKVM-GUEST-READY",
          "send:ip addr add 192.168.78.2/24 dev eth0; ls /sys/class/net/eth0/queues | tr '\\n' ' '; echo; ping -c 200 -i 0.002 -q 192.168.78.1; echo PING=$?",
          "expect:rx-0 rx-1 tx-0 tx-1", "expect:200 packets transmitted, 200 packets received", "expect:PING=0",
          "send:iperf3 -c 192.168.78.1 -t 2 -P 2 | grep SUM.*receiver; echo IPERF=$?", "expect:receiver",
          "expect:IPERF=0",
          "qmp:stop", "sleep:1", "qmp:cont",
          "send:iperf3 -c 192.168.78.1 -t 2 -P 2 -R | grep SUM.*receiver; echo REVERSE=$?", "expect:receiver",
          "expect:REVERSE=0",
          "send:ping -c 20 -i 0.05 -q 192.168.78.1; echo AFTER=$?", "expect:20 packets received", "expect:AFTER=0",
          // The driver enabled both pairs: the second one's receive queue raised interrupts too.
          "send:awk '/virtio0-input.1/ { print \"pair1=\" ($2 + $3 > 0) }' /proc/interrupts", "expect:pair1=1",
          "send:poweroff -f", "exit:0",
        ],
        skvm: [
          "run", "--cpus", "2", "--initrd", iperf, "--net", "tap,ifname=skvmmq0,vhost=on,queues=2", "--stats",
        ], monitor: true, timeout: 300)
      // Two guests on one bridge, each on a tap skvm creates and adds to it; they find each
      // other by IPv6 link-local address (no DHCP server needed).
      let peer = "fe80::5054:ff:fe00:2"
      let bridged = LinuxGuestHost.sessionCommand(
        "bridge",
        steps: [
          "expect:SKVM-GUEST-READY",
          "send:for i in $(seq 120); do ping -6 -c 1 -W 1 -I eth0 \(peer) >/dev/null 2>&1 && break; done; ping -6 -c 5 -I eth0 \(peer); echo BRIDGE=$?",
          "expect:5 packets transmitted, 5 packets received", "expect:BRIDGE=0",
          "send:poweroff -f", "exit:0",
        ],
        skvm: ["run", "--net", "tap,ifname=skvmb1,bridge=skvmbr0,mac=52:54:00:00:00:01"], timeout: 300)
      // All three in one namespace of the test's own; the bridge's second guest boots in the
      // background meanwhile.
      line +=
        " && unshare -n sh -c "
        + LinuxGuestHost.quote([
          "ip link set lo up && ip tuntap add skvmtap0 mode tap && ip addr add 192.168.77.1/24 dev skvmtap0 && "
            + "ip link set skvmtap0 up && ip link add skvmbr0 type bridge && ip link set skvmbr0 up && "
            + "ip tuntap add skvmmq0 mode tap multi_queue && ip addr add 192.168.78.1/24 dev skvmmq0 && "
            + "ip link set skvmmq0 up && { iperf3 -s -B 192.168.78.1 >/dev/null 2>&1 & iperf=$!; } && "
            + "{ sleep 600 | \(skvm) run --net tap,ifname=skvmb2,bridge=skvmbr0,mac=52:54:00:00:00:02 >\(directory)/peer.log 2>&1 & peer=$!; } && "
            + "\(tap) && \(vhost) && \(bridged); status=$?; kill $peer $iperf; [ $status = 0 ]"
        ])
    }
    let session = try await LinuxGuestHost.shell(line, timeout: 1300)
    #expect(session.status == 0, "\(session.transcript)")
    #expect(session.transcript.contains("=== result user-net ok"), "\(session.transcript)")
    #expect(session.transcript.contains("eth0 has address 10.0.2.15/24"), "DHCP gave the address")
    if Self.canUseTaps {
      #expect(session.transcript.contains("=== result tap ok"), "\(session.transcript)")
      #expect(session.transcript.contains("=== result bridge ok"), "\(session.transcript)")
      #expect(session.transcript.contains("=== result vhost ok"), "\(session.transcript)")
      if FileManager.default.fileExists(atPath: "/dev/vhost-net") || LinuxGuestHost.usesLane {
        #expect(
          session.transcript.contains("vhost-net moves the frames"), "the kernel moved them: \(session.transcript)")
      }
    }
  }
}
