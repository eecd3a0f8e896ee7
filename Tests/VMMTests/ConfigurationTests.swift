import Foundation
import SwiftKVM
import Testing

@Suite("Configuration")
struct ConfigurationTests {
  static let goodSizes: [(String, UInt64)] = [
    ("256M", 256 << 20), ("256", 256 << 20), ("1G", 1 << 30), ("1.5G", 3 << 29), ("512k", 512 << 10),
    ("4096B", 4096), ("2GiB", 2 << 30), ("1T", 1 << 40),
    (" 64M ", 64 << 20), ("2gib", 2 << 30), ("0.5K", 512), ("3.", 3 << 20),
  ]

  @Test("Sizes parse as QEMU users write them")
  func goodSizes() throws {
    for (text, expected) in Self.goodSizes {
      #expect(try ByteSize.parse(text) == expected, "\(text)")
    }
  }

  @Test(
    "Bad sizes say what is wrong",
    arguments: ["", "10Q", "-1", "1..5G", "G", "99999999999999999999", "16E", "1e6", "256Ж", "12#", " ", "1.5.G", "iB"])
  func badSizes(text: String) {
    #expect(throws: ByteSize.ParseError.self) { try ByteSize.parse(text) }
  }

  @Test("Sizes print in the largest whole unit")
  func describeSizes() {
    #expect(ByteSize.describe(256 << 20) == "256 MiB")
    #expect(ByteSize.describe(1536 << 20) == "1536 MiB")
    #expect(ByteSize.describe(4097) == "4097 bytes")
  }

  @Test("A configuration round-trips through JSON")
  func codable() throws {
    let configuration = VirtualMachineConfiguration(
      name: "probe", memorySize: 64 << 20, cpuCount: 4, boot: .flat(path: "/tmp/x.bin", entry: .long),
      debugExitPort: nil, timesExits: true)
    let data = try JSONEncoder().encode(configuration)
    #expect(try JSONDecoder().decode(VirtualMachineConfiguration.self, from: data) == configuration)
  }

  static let badConfigurations: [(VirtualMachineConfiguration, String)] = [
    (.init(memorySize: 0, boot: .flatImage(bytes: [0xF4], entry: .real)), "minimum is 1 MiB"),
    (.init(memorySize: (1 << 20) + 1, boot: .flatImage(bytes: [0xF4], entry: .real)), "multiple of 4 KiB"),
    (.init(memorySize: 1 << 60, boot: .flatImage(bytes: [0xF4], entry: .real)), "the host has only"),
    (.init(cpuCount: 0, boot: .flatImage(bytes: [0xF4], entry: .real)), "between 1 and"),
    (.init(cpuCount: 100_000, boot: .flatImage(bytes: [0xF4], entry: .real)), "between 1 and"),
    (.init(boot: .flatImage(bytes: [], entry: .real)), "is empty"),
    (
      .init(memorySize: 1 << 20, boot: .flatImage(bytes: [UInt8](repeating: 0, count: 1 << 20), entry: .real)),
      "raise --memory"
    ),
    (.init(boot: .flat(path: "/nonexistent/guest.bin", entry: .real)), "No such file"),
    (.init(boot: .flat(path: "/tmp", entry: .real)), "not a regular file"),
  ]

  @Test("Bad configurations fail before a VM exists, with a sentence naming the value")
  func badConfigurations() {
    for (configuration, phrase) in Self.badConfigurations {
      do {
        _ = try VirtualMachine(configuration: configuration, console: CapturedConsoleOutput())
        Issue.record("accepted a bad configuration: \(configuration)")
      } catch {
        #expect(error.description.contains(phrase), "\(error.description)")
      }
    }
  }

  @Test("No /dev/kvm: one sentence, and no VM")
  func missingKVM() {
    do {
      _ = try VirtualMachine(
        configuration: BuiltInGuest.helloConfiguration, console: CapturedConsoleOutput(), kvmPath: "/nonexistent/kvm")
      Issue.record("a VM was created without KVM")
    } catch {
      guard case .kvmUnavailable = error else {
        Issue.record("wrong error: \(error)")
        return
      }
      #expect(error.description.hasPrefix("/nonexistent/kvm is not accessible"))
    }
  }

  @Test("A machine runs once")
  func runsOnce() async throws {
    let machine = try VirtualMachine(configuration: BuiltInGuest.helloConfiguration, console: CapturedConsoleOutput())
    _ = try await machine.run()
    await #expect(throws: VirtualMachineError.self) { try await machine.run() }
  }

  @Test("Overlapping devices are refused with both names")
  func deviceOverlap() throws {
    let machine = try VirtualMachine(configuration: BuiltInGuest.helloConfiguration, console: CapturedConsoleOutput())
    #expect(throws: VirtualMachineError.self) { try machine.addDevice(RecordingDevice(), port: 0x3FA, size: 2) }
  }
}

@Suite("Built-in guests")
struct BuiltInGuestTests {
  @Test("The embedded hello bytes are exactly what Guests/hello/hello.S assembles to")
  func helloMatchesSource() throws {
    let bin = try ProbeBuilder.toolchainBin()
    let work = FileManager.default.temporaryDirectory.appendingPathComponent("skvm-hello-\(UUID().uuidString)")
    try FileManager.default.createDirectory(at: work, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(at: work) }
    let source = ProbeBuilder.repositoryRoot.appendingPathComponent("Guests/hello/hello.S").path
    let object = work.appendingPathComponent("hello.o").path
    let elf = work.appendingPathComponent("hello.elf").path
    let flat = work.appendingPathComponent("hello.bin").path
    for (tool, arguments) in [
      ("clang", ["-target", "x86_64-unknown-none-elf", "-c", source, "-o", object]),
      ("ld.lld", ["--image-base=0", "-Ttext=0", "-e", "_start", object, "-o", elf]),
      ("llvm-objcopy", ["-O", "binary", elf, flat]),
    ] {
      let process = try Process.run(bin.appendingPathComponent(tool), arguments: arguments)
      process.waitUntilExit()
      #expect(process.terminationStatus == 0, "\(tool) failed")
    }
    #expect([UInt8](try Data(contentsOf: URL(fileURLWithPath: flat))) == BuiltInGuest.hello)
  }
}

/// Configurations as snapshot files hold them.
@Suite("Configuration encoding")
struct ConfigurationEncodingTests {
  @Test("A configuration saved before NICs existed decodes with none; one with NICs round-trips")
  func networksField() throws {
    var configuration = VirtualMachineConfiguration(boot: .linux(kernel: "k", initrd: nil, commandLine: "c"))
    configuration.networks = [
      .user,
      NetworkConfiguration(
        backend: .tap(name: "tap0", bridge: "br0"), macAddress: MACAddress("52:54:00:00:00:07"), vhost: true),
    ]
    let data = try JSONEncoder().encode(configuration)
    #expect(try JSONDecoder().decode(VirtualMachineConfiguration.self, from: data) == configuration)
    var object = try #require(try JSONSerialization.jsonObject(with: data) as? [String: Any])
    object.removeValue(forKey: "networks")
    let old = try JSONDecoder().decode(
      VirtualMachineConfiguration.self, from: try JSONSerialization.data(withJSONObject: object))
    #expect(old.networks.isEmpty && old.boot == configuration.boot)
  }
}
