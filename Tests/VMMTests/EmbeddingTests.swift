import Foundation
import SwiftKVM
import Testing

/// What an embedder sees: the platform's address map, the error for an occupied range, and
/// the README's example built and run as a package of its own.
@Suite("Embedding")
struct EmbeddingTests {
  static func machine() throws -> VirtualMachine {
    try VirtualMachine(
      configuration: VirtualMachineConfiguration(memorySize: 16 << 20, boot: .flatImage(bytes: [0xF4], entry: .real)),
      console: CapturedConsoleOutput())
  }

  @Test("The address map lists the platform devices, PCI, what KVM serves in the kernel, and RAM")
  func addressMap() throws {
    let map = try Self.machine().addressMap
    let ports = map.filter { $0.kind == .port }.map { "0x\(String($0.base, radix: 16))+\($0.size) \($0.owner)" }
    #expect(
      ports == [
        "0x20+2 i8259 PIC master (KVM)", "0x40+4 i8254 PIT (KVM)", "0x60+5 i8042", "0x70+2 rtc", "0x80+1 post-code",
        "0xa0+2 i8259 PIC slave (KVM)", "0xf4+4 debug-exit", "0x3f8+8 serial0", "0x4d0+2 i8259 ELCR (KVM)",
        "0x505+1 pvpanic", "0x510+12 fw_cfg", "0x600+6 acpi-pm", "0xcf8+1 pci-conf1-address", "0xcf9+1 reset-control",
        "0xcfc+4 pci-conf1-data",
      ], "\(ports)")
    let mmio = map.filter { $0.kind == .mmio }.map(\.description)
    #expect(mmio.first == "MMIO 0x0-0xffffff RAM", "\(mmio)")
    for owner in ["IOAPIC (KVM)", "local APIC (KVM)", "KVM identity map and TSS", "pci-memory-window"] {
      #expect(map.contains { $0.owner == owner }, "\(owner) in \(mmio)")
    }
  }

  @Test(
    "A device over an occupied range is refused naming both devices and the free ranges nearby; a free one is taken")
  func occupiedRange() throws {
    let machine = try Self.machine()
    do {
      try machine.addDevice(ReservedRange("mine"), port: 0x500, size: 16)
      Issue.record("0x500 overlaps pvpanic")
    } catch {
      #expect(
        "\(error)"
          == "mine: port I/O range of 16 bytes at 0x500 overlaps pvpanic at 0x505-0x505; free ranges nearby: 0x4d2-0x504, 0x51c-0x5ff"
      )
    }
    do {
      try machine.addDevice(ReservedRange("mine"), mmio: 0xFEC0_0800, size: 0x100)
      Issue.record("0xfec00800 is the IOAPIC's")
    } catch {
      #expect("\(error)".contains("overlaps IOAPIC (KVM) at 0xfec00000-0xfec00fff"), "\(error)")
    }
    #expect(machine.freeRanges(.port, fitting: 16, near: 0x500) == [0x4D2...0x504, 0x51C...0x5FF])
    try machine.addDevice(ReservedRange("mine"), port: 0x520, size: 16)
    #expect(machine.addressMap.contains { $0.owner == "mine" && $0.base == 0x520 })
  }

  @Test(
    "The README's embedding example builds as a package of its own that depends on SwiftKVM by path, and runs",
    .enabled(
      if: ProcessInfo.processInfo.environment["SKVM_IN_LANE"] == nil,
      "the lane sees the checkout read-only; building the example once, on the host, is enough"))
  func readmeExample() throws {
    let root = ProbeBuilder.repositoryRoot
    let readme = try String(contentsOf: root.appendingPathComponent("README.md"), encoding: .utf8)
    let section = try #require(readme.range(of: "## Embedding"))
    let open = try #require(readme.range(of: "```swift\n", range: section.upperBound..<readme.endIndex))
    let close = try #require(readme.range(of: "```", range: open.upperBound..<readme.endIndex))
    let example = String(readme[open.upperBound..<close.lowerBound])
    // A package beside the build products, so a second run builds incrementally.
    let package = root.appendingPathComponent(".build/embedding-example")
    let sources = package.appendingPathComponent("Sources/Example")
    try FileManager.default.createDirectory(at: sources, withIntermediateDirectories: true)
    try """
    // swift-tools-version: 6.1
    import PackageDescription

    let package = Package(
      name: "Example",
      dependencies: [.package(path: "\(root.path)")],
      targets: [
        .executableTarget(
          name: "Example", dependencies: [.product(name: "SwiftKVM", package: "\(root.lastPathComponent)")])
      ]
    )
    """.write(to: package.appendingPathComponent("Package.swift"), atomically: true, encoding: .utf8)
    try example.write(to: sources.appendingPathComponent("main.swift"), atomically: true, encoding: .utf8)
    let swift = URL(fileURLWithPath: "/usr/bin/env")
    let build = try ChildProcess.run(swift, ["swift", "build", "--package-path", package.path], mergeErrors: true)
    #expect(build.status == 0, "the README's example does not build:\n\(build.output)")
    guard build.status == 0 else { return }
    let run = try ChildProcess.run(package.appendingPathComponent(".build/debug/Example"), [], mergeErrors: true)
    #expect(run.status == 0, "\(run.output)")
    #expect(run.output.contains("i8042") && run.output.contains("[75] 2"), "\(run.output)")
  }
}
