import Testing

@testable import Monitor

@Suite("Monitor addresses (QEMU's -qmp syntax)")
struct MonitorAddressTests {
  @Test("unix and tcp addresses parse with QEMU's options")
  func valid() throws {
    #expect(
      try MonitorAddress(parsing: "unix:/tmp/a.sock,server=on,wait=off")
        == MonitorAddress(endpoint: .unix(path: "/tmp/a.sock"), waitForClient: false))
    #expect(try MonitorAddress(parsing: "unix:/tmp/a.sock,server,wait=on").waitForClient)
    #expect(try MonitorAddress(parsing: "unix:rel.sock,server,nowait").endpoint == .unix(path: "rel.sock"))
    #expect(try MonitorAddress(parsing: "tcp::4444,server=on").endpoint == .tcp(host: "127.0.0.1", port: 4444))
    #expect(try MonitorAddress(parsing: "tcp:0.0.0.0:4444").endpoint == .tcp(host: "0.0.0.0", port: 4444))
    #expect(try MonitorAddress(parsing: "tcp:[::1]:4444").endpoint == .tcp(host: "::1", port: 4444))
  }

  @Test(
    "Unparseable values are refused with the value and the expected form",
    arguments: [
      "stdio", "unix:", "tcp:localhost", "tcp::0", "tcp::70000", "unix:/x,server=off", "unix:/x,wait=maybe",
      "unix:/x,colour=on", "unix:/" + String(repeating: "d", count: 120),
    ])
  func invalid(_ text: String) {
    #expect {
      _ = try MonitorAddress(parsing: text)
    } throws: { error in
      "\(error)".contains("'\(text)'") && "\(error)".contains("expected unix:PATH")
    }
  }
}
