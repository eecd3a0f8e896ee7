import Foundation
import Testing

@testable import DomainXML

@Suite struct DomainXMLTests {
  static let full = """
    <domain type='kvm'>
      <name>web-1</name>
      <uuid>4dea22b3-1d52-d8f3-2516-782e98ab3fa0</uuid>
      <title>The web server</title>
      <description>Serves &lt;everything&gt; &amp; more</description>
      <memory unit='GiB'>1</memory>
      <currentMemory unit='MiB'>1024</currentMemory>
      <vcpu placement='static'>2</vcpu>
      <os>
        <type arch='x86_64' machine='pc'>hvm</type>
        <kernel>/boot/vmlinuz</kernel>
        <initrd>/boot/initrd.img</initrd>
        <cmdline>console=ttyS0 quiet</cmdline>
      </os>
      <on_poweroff>destroy</on_poweroff>
      <on_reboot>restart</on_reboot>
      <on_crash>restart</on_crash>
      <devices>
        <emulator>/usr/bin/qemu-system-x86_64</emulator>
        <disk type='file' device='disk'>
          <driver name='qemu' type='qcow2' cache='none'/>
          <source file='/var/lib/skvm/images/web-1.qcow2'/>
          <target dev='vda' bus='virtio'/>
        </disk>
        <disk type='file' device='cdrom'>
          <source file='/srv/install.iso'/>
          <target dev='sda' bus='scsi'/>
          <readonly/>
        </disk>
        <interface type='bridge'>
          <mac address='52:54:00:12:34:56'/>
          <source bridge='br0'/>
          <model type='virtio'/>
        </interface>
        <interface type='user'/>
        <serial type='pty'><target port='0'/></serial>
        <console type='pty'><target type='serial' port='0'/></console>
        <rng model='virtio'><backend model='random'>/dev/urandom</backend></rng>
      </devices>
    </domain>
    """

  @Test func readsTheDocumentedSubset() throws {
    let parsed = try DomainXML.parse(Self.full)
    let domain = parsed.definition
    #expect(domain.name == "web-1")
    #expect(domain.uuid.uuidString.lowercased() == "4dea22b3-1d52-d8f3-2516-782e98ab3fa0")
    #expect(domain.title == "The web server")
    #expect(domain.description == "Serves <everything> & more")
    #expect(domain.memoryKiB == 1 << 20)
    #expect(domain.vcpus == 2)
    #expect(domain.os.kernel == "/boot/vmlinuz" && domain.os.cmdline == "console=ttyS0 quiet")
    #expect(domain.onCrash == .restart)
    #expect(domain.disks.count == 2)
    #expect(domain.disks[0].format == "qcow2" && domain.disks[0].cache == "none" && !domain.disks[0].readOnly)
    #expect(domain.disks[1].device == .cdrom && domain.disks[1].readOnly)
    #expect(domain.interfaces[0].kind == .bridge("br0", tap: nil) && domain.interfaces[0].mac == "52:54:00:12:34:56")
    #expect(domain.interfaces[1].kind == .user)
    #expect(domain.rng?.device == "/dev/urandom")
    #expect(!parsed.generatedUUID)
    #expect(parsed.warnings.contains { $0.contains("<emulator>") })
  }

  @Test func theREADMEsExampleIsAccepted() throws {
    let readme = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
      .deletingLastPathComponent().appendingPathComponent("README.md")
    let text = try String(contentsOf: readme, encoding: .utf8)
    let start = try #require(text.range(of: "```xml\n<domain"))
    let end = try #require(text.range(of: "</domain>\n```", range: start.upperBound..<text.endIndex))
    let document = String(text[text.index(start.lowerBound, offsetBy: 7)..<text.index(end.lowerBound, offsetBy: 9)])
    let parsed = try DomainXML.parse(document)
    #expect(parsed.definition.name == "web" && parsed.definition.vcpuPins == [1: "2-3"])
    #expect(parsed.definition.disks.count == 2 && parsed.definition.interfaces.count == 1)
  }

  @Test func textAndAttributesSurviveTheRoundTrip() throws {
    var definition = try DomainXML.parse("<domain><name>a</name><memory>65536</memory></domain>").definition
    definition.description = "one\r\ntwo\tthree & <four>"
    definition.disks = [.init(device: .disk, source: "/a b\tc.img", target: "vda")]
    let again = try DomainXML.parse(DomainXML.format(definition)).definition
    #expect(again.description == definition.description)
    #expect(again.disks.first?.source == "/a b\tc.img")
  }

  @Test func formatThenParseGivesTheSameDefinition() throws {
    let domain = try DomainXML.parse(Self.full).definition
    // dumpxml states the defaults (format raw, model virtio): after one round it is a fixed point.
    let again = try DomainXML.parse(DomainXML.format(domain)).definition
    #expect(DomainXML.format(again) == DomainXML.format(domain))
    #expect(try DomainXML.parse(DomainXML.format(again)).definition == again)
    #expect(again.name == domain.name && again.disks.map(\.source) == domain.disks.map(\.source))
    let withID = DomainXML.format(domain, id: 7)
    #expect(withID.hasPrefix("<domain type='kvm' id='7'>"))
  }

  @Test func aMissingUUIDIsGenerated() throws {
    let parsed = try DomainXML.parse("<domain type='kvm'><name>a</name><memory>65536</memory></domain>")
    #expect(parsed.generatedUUID)
    #expect(parsed.definition.memoryKiB == 65536)
    #expect(parsed.definition.vcpus == 1)
  }

  @Test func theFlatExtensionNeedsItsNamespace() throws {
    let body = "<name>p</name><memory unit='MiB'>64</memory><os><skvm:flat entry='long'>/p.bin</skvm:flat></os>"
    let parsed = try DomainXML.parse("<domain xmlns:skvm='\(DomainXML.namespace)'>\(body)</domain>")
    #expect(parsed.definition.os.flat == .init(path: "/p.bin", entry: "long"))
    #expect(DomainXML.format(parsed.definition).contains("xmlns:skvm="))
    #expect(throws: XMLDocumentError.self) { try DomainXML.parse("<domain>\(body)</domain>") }
  }

  /// Each refusal names what was wrong.
  @Test(arguments: [
    (
      "<domain><name>a</name><memory>65536</memory><video/></domain>",
      "<video> at line 1: unknown element inside <domain>"
    ),
    ("<domain><name>a</name><memory size='1'>65536</memory></domain>", "unknown attribute 'size'"),
    ("<domain><memory>65536</memory></domain>", "needs a <name>"),
    ("<domain><name>a/b</name><memory>65536</memory></domain>", "contains '/'"),
    ("<domain><name>42</name><memory>65536</memory></domain>", "all digits"),
    ("<domain><name>a</name><name>b</name><memory>65536</memory></domain>", "given twice"),
    ("<domain><name>a</name><memory unit='XB'>1</memory></domain>", "unit='XB'"),
    ("<domain><name>a</name><memory unit='TiB'>4</memory></domain>", "more than 1 TiB"),
    // 2^64 - 1 bytes: the product wraps to near 2^64 (it must not trap rounding to KiB).
    ("<domain><name>a</name><memory unit='b'>18446744073709551615</memory></domain>", "more than 1 TiB"),
    ("<domain><name>a</name><memory unit='KiB'>18014398509481983</memory></domain>", "more than 1 TiB"),
    ("<domain><name>a</name><memory>12</memory></domain>", "less than 1 MiB"),
    ("<domain><name>a</name><memory>65536</memory><vcpu>0</vcpu></domain>", "not 1–255 vCPUs"),
    ("<domain><name>a</name><memory>65536</memory><uuid>nope</uuid></domain>", "not a UUID"),
    (
      "<domain><name>a</name><memory>65536</memory><devices><disk><source file='rel.img'/><target dev='vda'/></disk></devices></domain>",
      "not an absolute path"
    ),
    (
      "<domain><name>a</name><memory>65536</memory><devices><disk><source file='/a'/><target dev='vda'/></disk><disk><source file='/b'/><target dev='vda'/></disk></devices></domain>",
      "used twice"
    ),
    (
      "<domain><name>a</name><memory>65536</memory><devices><interface type='network'/></devices></domain>",
      "type='network' is not supported"
    ),
    (
      "<domain><name>a</name><memory>65536</memory><devices><interface type='user'><mac address='01:00:5e:00:00:01'/></interface></devices></domain>",
      "not a unicast MAC"
    ),
    ("<domain><name>a</name><memory>65536</memory><on_crash>preserve</on_crash></domain>", "not carried out"),
    (
      "<domain><name>a</name><memory>65536</memory><os><kernel>/k</kernel><boot dev='hd'/></os></domain>", "give one of"
    ),
    ("<domain type='xen'><name>a</name><memory>65536</memory></domain>", "type='xen'"),
    ("<vm><name>a</name></vm>", "the root element must be <domain>"),
  ])
  func refusesWithAReason(document: String, reason: String) {
    do {
      _ = try DomainXML.parse(document)
      Issue.record("accepted: \(document)")
    } catch {
      #expect(error.description.contains(reason), "\(error.description)")
    }
  }
}

@Suite struct HostileXMLTests {
  func refusal(_ bytes: [UInt8]) -> String? {
    do {
      _ = try DomainXML.parse(bytes)
      return nil
    } catch {
      return error.description
    }
  }

  @Test func entityExpansionBombIsRefused() {
    var bomb = "<?xml version='1.0'?><!DOCTYPE lolz [<!ENTITY lol 'lol'>"
    var previous = "lol"
    for level in 1...9 {
      bomb += "<!ENTITY lol\(level) '" + String(repeating: "&\(previous);", count: 10) + "'>"
      previous = "lol\(level)"
    }
    bomb += "]><domain><name>&lol9;</name><memory>65536</memory></domain>"
    #expect(refusal(Array(bomb.utf8))?.contains("DOCTYPE") == true)
  }

  @Test func externalEntitiesAreRefused() {
    let document = "<!DOCTYPE d [<!ENTITY x SYSTEM 'file:///etc/passwd'>]><domain><name>&x;</name></domain>"
    #expect(refusal(Array(document.utf8))?.contains("DOCTYPE") == true)
  }

  @Test func oversizedDocumentsAreRefused() {
    let padding = String(repeating: " ", count: (1 << 20) + 1)
    let document = "<domain><name>a</name><memory>65536</memory>\(padding)</domain>"
    #expect(refusal(Array(document.utf8))?.contains("1 MiB") == true)
  }

  @Test func otherEncodingsAreRefused() {
    var utf16: [UInt8] = [0xFF, 0xFE]
    for unit in "<domain/>".utf16 { utf16 += [UInt8(unit & 0xFF), UInt8(unit >> 8)] }
    #expect(refusal(utf16) != nil)
    let declared = "<?xml version='1.0' encoding='ISO-8859-1'?><domain><name>a</name></domain>"
    #expect(refusal(Array(declared.utf8))?.contains("encoding") == true)
    #expect(refusal([0x3C, 0x64, 0xC3, 0x28, 0x3E]) != nil)
  }

  @Test func deepAndWideDocumentsAreRefused() {
    let deep = String(repeating: "<a>", count: 100) + String(repeating: "</a>", count: 100)
    #expect(refusal(Array(deep.utf8))?.contains("nest deeper") == true)
    let wide = "<domain>" + String(repeating: "<name>a</name>", count: 30_000) + "</domain>"
    #expect(refusal(Array(wide.utf8))?.contains("more than") == true)
  }

  @Test func malformedDocumentsAreRefusedWithAPosition() {
    for document in ["<domain><name>a</domain>", "", "<domain", "text", "<domain><name>a</name></domain><x/>"] {
      let reason = refusal(Array(document.utf8))
      #expect(reason != nil, "accepted: \(document)")
    }
    #expect(refusal(Array("<domain>\n<name>a</domain>".utf8))?.contains("line") == true)
  }

  @Test func processingInstructionsAreRefused() {
    let document = "<domain><?php echo 1; ?><name>a</name><memory>65536</memory></domain>"
    #expect(refusal(Array(document.utf8))?.contains("processing instructions") == true)
  }
}
