import DomainXML
import Foundation
import ManagementModel
import Testing
import VMM

@testable import Management

@Suite struct DomainRegistryTests {
  func temporaryDatabase() throws -> String {
    let directory = FileManager.default.temporaryDirectory.appendingPathComponent("skvm-registry-\(UUID().uuidString)")
    try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
    return directory.appendingPathComponent("domains.sqlite").path
  }

  func record(_ name: String, uuid: String = UUID().uuidString.lowercased()) -> DomainRecord {
    DomainRecord(
      uuid: uuid, name: name, xml: "<domain/>", persistent: true, autostart: false, template: false, state: .shutOff,
      reason: .unknown, domainID: nil, pid: nil, processStart: nil, updatedAt: 0)
  }

  @Test func definesListsAndRemoves() throws {
    let registry = try DomainRegistry(path: try temporaryDatabase())
    try registry.define(record("b"))
    try registry.define(record("a"))
    #expect(try registry.all().map(\.name) == ["a", "b"])
    let a = try #require(try registry.record(named: "a"))
    #expect(try registry.record(uuid: a.uuid)?.name == "a")
    try registry.remove(uuid: a.uuid)
    #expect(try registry.record(named: "a") == nil)
  }

  @Test func refusesATakenNameOrUUID() throws {
    let registry = try DomainRegistry(path: try temporaryDatabase())
    let first = try registry.define(record("a"))
    #expect(throws: RegistryError.nameTaken("a", uuid: first.uuid)) { try registry.define(record("a")) }
    #expect(throws: RegistryError.uuidTaken(first.uuid, name: "a")) {
      try registry.define(record("b", uuid: first.uuid))
    }
  }

  @Test func redefiningKeepsTheStateAndFlags() throws {
    let registry = try DomainRegistry(path: try temporaryDatabase())
    let first = try registry.define(record("a"))
    try registry.update(uuid: first.uuid) {
      $0.state = .running
      $0.pid = 1234
      $0.autostart = true
    }
    var changed = record("a", uuid: first.uuid)
    changed.xml = "<domain>changed</domain>"
    let stored = try registry.define(changed)
    #expect(stored.xml == "<domain>changed</domain>")
    #expect(stored.state == .running && stored.pid == 1234 && stored.autostart)
  }

  @Test func survivesReopeningAndCountsIDs() throws {
    let path = try temporaryDatabase()
    do {
      let registry = try DomainRegistry(path: path)
      try registry.define(record("kept"))
      #expect(try registry.nextDomainID() == 1)
      #expect(try registry.nextDomainID() == 2)
    }
    let reopened = try DomainRegistry(path: path)
    #expect(try reopened.record(named: "kept") != nil)
    #expect(try reopened.nextDomainID() == 3)
  }

  @Test func aFileThatIsNotADatabaseIsAClearError() throws {
    let path = try temporaryDatabase()
    try Data("not sqlite at all, just text".utf8).write(to: URL(fileURLWithPath: path))
    #expect(throws: RegistryError.self) { try DomainRegistry(path: path) }
  }
}

@Suite struct DomainLaunchTests {
  @Test func argumentsFollowTheDefinition() throws {
    let definition = try DomainXML.parse(DomainXMLTests.full).definition
    let arguments = DomainLaunch.arguments(for: definition, monitorPath: "/run/x.qmp")
    let text = arguments.joined(separator: " ")
    #expect(text.hasPrefix("run --name web-1 --qmp unix:/run/x.qmp --paused --memory 1024M --cpus 2"))
    #expect(text.contains("--kernel /boot/vmlinuz --initrd /boot/initrd.img --cmdline console=ttyS0 quiet"))
    #expect(text.contains("--disk /var/lib/skvm/images/web-1.qcow2,format=qcow2,cache=none"))
    #expect(text.contains("--cdrom /srv/install.iso"))
    #expect(text.contains("--net tap,ifname=skv4dea22b3n0,bridge=br0,mac=52:54:00:12:34:56"))
    #expect(text.contains("--net user --rng") || text.contains("--net user"))
    #expect(arguments.contains("--rng"))
  }

  @Test func noInterfaceMeansNoNIC() throws {
    let definition = try DomainXML.parse("<domain><name>a</name><memory>65536</memory></domain>").definition
    let arguments = DomainLaunch.arguments(for: definition, monitorPath: "/m")
    #expect(arguments.suffix(2) == ["--net", "none"])
    #expect(!arguments.contains("--kernel"))
  }

  @Test func firmwareBootOrder() throws {
    let xml = "<domain><name>a</name><memory>65536</memory><os><boot dev='cdrom'/><boot dev='hd'/></os></domain>"
    let arguments = DomainLaunch.arguments(for: try DomainXML.parse(xml).definition, monitorPath: "/m")
    #expect(arguments.joined(separator: " ").contains("--boot order=dc"))
  }

  @Test func missingFilesAreNamed() throws {
    let definition = try DomainXML.parse(DomainXMLTests.full).definition
    let missing = DomainLaunch.missingFiles(definition) { $0 == "/boot/vmlinuz" }
    #expect(missing.contains("/boot/initrd.img") && !missing.contains("/boot/vmlinuz"))
  }
}

@Suite struct ManagementVersionTests {
  @Test func theDaemonReportsSwiftKVMsVersion() {
    #expect(ManagementVersion.current == SwiftKVMVersion.current)
  }
}
