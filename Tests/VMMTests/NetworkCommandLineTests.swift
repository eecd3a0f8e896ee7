import Foundation
import Testing

/// `--net` as users write it: every bad value is one clear line before anything boots, and a
/// machine with NICs of each kind runs.
@Suite("--net")
struct NetworkCommandLineTests {
  @Test(
    "Bad --net values fail before boot with what was wrong and what to do",
    arguments: [
      (["--net", "tap"], "a tap needs ifname=NAME"),
      (["--net", "user,mtu=20"], "mtu=20 is not a number from 68 to 65535"),
      (["--net", "tap,ifname=t0,vhost=maybe"], "vhost=maybe: expected on or off"),
      (["--net", "user,mac=01:00:5e:00:00:01"], "is a multicast address"),
      (["--net", "user,mac=00:00:00:00:00:00"], "is a zero address"),
      (["--net", "user,mac=52:54:00:zz:00:01"], "is not a MAC address"),
      (["--net", "user,hostfwd=tcp::80"], "expected tcp:[HOSTADDR]:HOSTPORT-[GUESTADDR]:GUESTPORT"),
      (["--net", "carrier-pigeon"], "unknown back end 'carrier-pigeon'"),
      (["--net", "user,speed=fast"], "unknown option 'speed=fast'"),
      (["--net", "none", "--net", "user"], "--net none means no NIC at all"),
      (["--net", "macvtap"], "a macvtap needs path=/dev/tapN"),
      (["--net", "macvtap,path=/dev/null"], "is not a macvtap character device"),
      (["--net", "macvtap,path=/nonexistent/tap9"], "does not exist"),
      (
        ["--net", "user,mac=52:54:00:00:00:09", "--net", "user,mac=52:54:00:00:00:09"],
        "MAC address 52:54:00:00:00:09 is already used by NIC 0"
      ),
      (["--net", "tap,ifname=a-name-far-too-long-for-linux"], "is not a valid interface name"),
      (["--net", "tap,ifname=t0,queues=0"], "queues=0 is not a number from 1 to 16"),
      (["--net", "macvtap,path=/dev/tap9,queues=99"], "queues=99 is not a number from 1 to 16"),
      (["--net", "user,queues=2"], "user networking has one queue pair"),
    ])
  func badValues(arguments: [String], says: String) throws {
    let result = try CommandLineTests.skvm(["run", "--hello"] + arguments)
    #expect(result.status != 0, "\(arguments)")
    #expect(result.errors.contains(says), "\(arguments): \(result.errors)")
    #expect(!result.output.contains("Hello from a SwiftKVM guest"), "nothing ran")
    #expect(!result.errors.contains("Fatal error") && !result.errors.contains("Backtrace"), "no crash")
  }

  @Test("A tap made without multi_queue refuses queues=2, and says how to make one that takes it")
  func singleQueueTap() throws {
    guard getuid() == 0, access("/dev/net/tun", R_OK | W_OK) == 0 else { return }
    let name = "skvmsq\(getpid() % 10000)"
    let made = try ChildProcess.run(URL(fileURLWithPath: "/usr/sbin/ip"), ["tuntap", "add", name, "mode", "tap"])
    #expect(made.status == 0, "\(made.output)")
    defer { _ = try? ChildProcess.run(URL(fileURLWithPath: "/usr/sbin/ip"), ["link", "delete", name]) }
    let result = try CommandLineTests.skvm(["run", "--hello", "--net", "tap,ifname=\(name),queues=2"])
    #expect(result.status != 0)
    #expect(result.errors.contains("is not a multiqueue tap"), "\(result.errors)")
    #expect(result.errors.contains("ip tuntap add \(name) mode tap multi_queue"), "\(result.errors)")
  }

  @Test("A hostfwd port that is taken is named, before boot")
  func takenPort() throws {
    let listener = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    defer { close(listener) }
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_addr.s_addr = inet_addr("127.0.0.1")
    address.sin_port = 0
    var length = socklen_t(MemoryLayout<sockaddr_in>.size)
    let bound = withUnsafeMutablePointer(to: &address) {
      $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { pointer in
        bind(listener, pointer, length) == 0 && listen(listener, 1) == 0 && getsockname(listener, pointer, &length) == 0
      }
    }
    #expect(bound)
    let port = Int(UInt16(bigEndian: address.sin_port))
    let result = try CommandLineTests.skvm(["run", "--hello", "--net", "user,hostfwd=tcp::\(port)-:22"])
    #expect(result.status != 0)
    #expect(result.errors.contains("cannot listen on 127.0.0.1:\(port)"), "\(result.errors)")
  }

  @Test("A machine with user networking and (as root) a tap it creates runs and says what each NIC did")
  func runsWithNICs() throws {
    var arguments = ["run", "--hello", "--stats", "--net", "user,hostfwd=tcp::\(20_000 + getpid() % 10_000)-:22"]
    let root = getuid() == 0 && access("/dev/net/tun", R_OK | W_OK) == 0
    if root {
      arguments += [
        "--net", "tap,ifname=skvmcli\(getpid() % 10000)", "--net", "tap,ifname=skvmmq\(getpid() % 10000),queues=4",
      ]
    }
    let result = try CommandLineTests.skvm(arguments)
    #expect(result.output.contains("Hello from a SwiftKVM guest"), "\(result.errors)")
    #expect(result.errors.contains("net0 (user, 52:54:00:"), "\(result.errors)")
    if root {
      #expect(result.errors.contains("net1 (skvmcli"), "\(result.errors)")
      #expect(result.errors.contains("1 of 4 queue pairs"), "a multiqueue tap skvm created: \(result.errors)")
      #expect(!FileManager.default.fileExists(atPath: "/sys/class/net/skvmcli\(getpid() % 10000)"), "gone with skvm")
    }
  }
}
