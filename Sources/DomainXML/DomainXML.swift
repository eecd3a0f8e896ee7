import Foundation
import Network

/// libvirt's domain XML ↔ ``DomainDefinition``, checked strictly: an element or attribute
/// this host does not understand is an error that names it (with its line), never ignored.
///
/// ```swift
/// let parsed = try DomainXML.parse(Array(text.utf8))
/// print(DomainXML.format(parsed.definition))
/// ```
public enum DomainXML {
  /// The namespace of SwiftKVM's own elements (`xmlns:skvm`), as libvirt's `qemu:` namespace.
  public static let namespace = "https://swiftkvm.dev/schemas/domain/1.0"

  /// A parsed definition and what the reader noticed but accepted.
  public struct Parsed: Sendable {
    public var definition: DomainDefinition
    /// True when the document named no UUID (one was generated).
    public var generatedUUID: Bool
    /// Things accepted with a remark (e.g. `<emulator>`, which skvmd ignores).
    public var warnings: [String]
  }

  /// Parses and checks a domain document. Generates a UUID and MAC addresses where absent.
  public static func parse(_ bytes: [UInt8]) throws(XMLDocumentError) -> Parsed {
    let root = try XMLDocumentReader.parse(bytes)
    var reader = DomainReader()
    let definition = try reader.domain(root)
    return Parsed(definition: definition, generatedUUID: reader.generatedUUID, warnings: reader.warnings)
  }

  /// Parses a domain document given as text.
  public static func parse(_ text: String) throws(XMLDocumentError) -> Parsed { try parse(Array(text.utf8)) }

  /// The definition as domain XML (`dumpxml`); `id` is the running domain's id, if any.
  public static func format(_ definition: DomainDefinition, id: Int? = nil) -> String {
    var writer = XMLTextWriter()
    let usesExtension = definition.os.flat != nil
    writer.container(
      "domain", [("type", "kvm"), ("id", id.map(String.init)), ("xmlns:skvm", usesExtension ? namespace : nil)]
    ) { w in
      w.element("name", text: definition.name)
      w.element("uuid", text: definition.uuid.uuidString.lowercased())
      if let title = definition.title { w.element("title", text: title) }
      if let description = definition.description { w.element("description", text: description) }
      w.element("memory", [("unit", "KiB")], text: String(definition.memoryKiB))
      w.element("currentMemory", [("unit", "KiB")], text: String(definition.currentMemoryKiB ?? definition.memoryKiB))
      w.element("vcpu", [("placement", "static")], text: String(definition.vcpus))
      if !definition.vcpuPins.isEmpty {
        w.container("cputune") { w in
          for (vcpu, cpuset) in definition.vcpuPins.sorted(by: { $0.key < $1.key }) {
            w.element("vcpupin", [("vcpu", String(vcpu)), ("cpuset", cpuset)])
          }
        }
      }
      let os = definition.os
      w.container("os") { w in
        w.element("type", [("arch", os.architecture ?? "x86_64"), ("machine", os.machine)], text: os.type)
        if let loader = os.loader { w.element("loader", [("type", "rom")], text: loader) }
        if let kernel = os.kernel { w.element("kernel", text: kernel) }
        if let initrd = os.initrd { w.element("initrd", text: initrd) }
        if let cmdline = os.cmdline { w.element("cmdline", text: cmdline) }
        if let flat = os.flat { w.element("skvm:flat", [("entry", flat.entry)], text: flat.path) }
        for device in os.bootDevices { w.element("boot", [("dev", device.rawValue)]) }
      }
      w.element("on_poweroff", text: definition.onPoweroff.rawValue)
      w.element("on_reboot", text: definition.onReboot.rawValue)
      w.element("on_crash", text: definition.onCrash.rawValue)
      w.container("devices") { w in
        for disk in definition.disks {
          w.container("disk", [("type", "file"), ("device", disk.device.rawValue)]) { w in
            w.element("driver", [("name", "qemu"), ("type", disk.format ?? "raw"), ("cache", disk.cache)])
            if let source = disk.source { w.element("source", [("file", source)]) }
            w.element("target", [("dev", disk.target), ("bus", disk.bus ?? "virtio")])
            if disk.readOnly { w.element("readonly") }
          }
        }
        for interface in definition.interfaces {
          let type: String
          switch interface.kind {
          case .ethernet: type = "ethernet"
          case .bridge: type = "bridge"
          case .user: type = "user"
          }
          w.container("interface", [("type", type)]) { w in
            if let mac = interface.mac { w.element("mac", [("address", mac)]) }
            switch interface.kind {
            case .ethernet(let tap): if let tap { w.element("target", [("dev", tap)]) }
            case .bridge(let bridge, let tap):
              w.element("source", [("bridge", bridge)])
              if let tap { w.element("target", [("dev", tap)]) }
            case .user: break
            }
            w.element("model", [("type", interface.model ?? "virtio")])
          }
        }
        for serial in definition.serials {
          w.container("serial", [("type", serial.type)]) { w in
            if let path = serial.path { w.element("source", [("path", path)]) }
            w.element("target", [("port", String(serial.port ?? 0))])
          }
        }
        for console in definition.consoles {
          w.container("console", [("type", console.type)]) { w in
            if let path = console.path { w.element("source", [("path", path)]) }
            w.element("target", [("type", console.targetType ?? "serial"), ("port", String(console.port ?? 0))])
          }
        }
        if let rng = definition.rng {
          w.container("rng", [("model", rng.model)]) { w in
            w.element("backend", [("model", rng.backend)], text: rng.device)
          }
        }
      }
    }
    return writer.text
  }
}

/// The strict walk over a parsed document.
private struct DomainReader {
  var generatedUUID = false
  var warnings: [String] = []

  typealias Failure = XMLDocumentError

  func fail(_ node: XMLElementNode, _ message: String) -> Failure {
    Failure("<\(node.name)> at line \(node.line): \(message)")
  }

  /// Refuses attributes and child elements other than those named.
  func expect(_ node: XMLElementNode, attributes: Set<String> = [], children: Set<String> = []) throws(Failure) {
    for attribute in node.attributes where !attributes.contains(attribute.name) {
      let known = attributes.isEmpty ? "it takes none" : "known: " + attributes.sorted().joined(separator: ", ")
      throw fail(node, "unknown attribute '\(attribute.name)' (\(known))")
    }
    for child in node.children where !children.contains(child.name) {
      let known = children.isEmpty ? "it takes none" : "known: " + children.sorted().joined(separator: ", ")
      throw Failure("<\(child.name)> at line \(child.line): unknown element inside <\(node.name)> (\(known))")
    }
    if children.isEmpty == false || attributes.isEmpty == false, !node.children.isEmpty,
      !node.trimmedText.isEmpty
    {
      throw fail(node, "text mixed with elements")
    }
  }

  /// At most one child of this name.
  func single(_ node: XMLElementNode, _ name: String) throws(Failure) -> XMLElementNode? {
    let found = node.children(named: name)
    if found.count > 1 { throw Failure("<\(name)> at line \(found[1].line): given twice inside <\(node.name)>") }
    return found.first
  }

  /// The text of a leaf element (no attributes but those allowed, no children), non-empty.
  func leafText(_ node: XMLElementNode, attributes: Set<String> = []) throws(Failure) -> String {
    try expect(node, attributes: attributes)
    let text = node.trimmedText
    if text.isEmpty { throw fail(node, "empty") }
    return text
  }

  func oneOf(_ node: XMLElementNode, _ attribute: String, _ value: String, _ allowed: [String]) throws(Failure) {
    if !allowed.contains(value) {
      throw fail(node, "\(attribute)='\(value)' is not supported (use \(allowed.joined(separator: " or ")))")
    }
  }

  mutating func domain(_ root: XMLElementNode) throws(Failure) -> DomainDefinition {
    guard root.name == "domain" else { throw fail(root, "the root element must be <domain>") }
    let known: Set<String> = [
      "name", "uuid", "title", "description", "memory", "currentMemory", "vcpu", "os", "on_poweroff",
      "on_reboot", "on_crash", "devices", "features", "clock", "cpu", "cputune",
    ]
    try expect(root, attributes: ["type", "id", "xmlns:skvm"], children: known)
    if let type = root.attribute("type") { try oneOf(root, "type", type, ["kvm"]) }
    if let namespace = root.attribute("xmlns:skvm"), namespace != DomainXML.namespace {
      throw fail(root, "xmlns:skvm must be '\(DomainXML.namespace)'")
    }
    var seen = Set<String>()
    for child in root.children where !seen.insert(child.name).inserted {
      throw Failure("<\(child.name)> at line \(child.line): given twice")
    }
    guard let nameNode = try single(root, "name") else { throw fail(root, "a domain needs a <name>") }
    let name = try leafText(nameNode)
    if let problem = DomainName.problem(name) { throw fail(nameNode, problem) }

    guard let memoryNode = try single(root, "memory") else { throw fail(root, "a domain needs <memory>") }
    let memory = try kibibytes(memoryNode)
    var os = DomainDefinition.OperatingSystem()
    if let osNode = try single(root, "os") {
      os = try operatingSystem(osNode, usesExtension: root.attribute("xmlns:skvm") != nil)
    }
    var definition = DomainDefinition(name: name, memoryKiB: memory, os: os)
    if let uuidNode = try single(root, "uuid") {
      let text = try leafText(uuidNode)
      guard let uuid = DomainName.uuid(text) else { throw fail(uuidNode, "'\(text)' is not a UUID") }
      definition.uuid = uuid
    } else {
      generatedUUID = true
    }
    if let node = try single(root, "title") {
      try expect(node)
      if node.trimmedText.contains("\n") { throw fail(node, "a title is one line") }
      definition.title = node.trimmedText
    }
    if let node = try single(root, "description") {
      try expect(node)
      definition.description = node.text
    }
    if let node = try single(root, "currentMemory") {
      let current = try kibibytes(node)
      if current > memory { throw fail(node, "more than <memory> (\(current) > \(memory) KiB)") }
      if current != memory {
        warnings.append("currentMemory (\(current) KiB) below memory: the guest gets all \(memory) KiB (no balloon)")
      }
      definition.currentMemoryKiB = current
    }
    if let node = try single(root, "vcpu") {
      let text = try leafText(node, attributes: ["placement", "current"])
      if let placement = node.attribute("placement") { try oneOf(node, "placement", placement, ["static"]) }
      guard let count = Int(text), (1...255).contains(count) else { throw fail(node, "'\(text)' is not 1–255 vCPUs") }
      if let current = node.attribute("current"), Int(current) != count {
        throw fail(node, "current='\(current)' differs from the vCPU count (no hot-plug here)")
      }
      definition.vcpus = count
    }
    let actions: [(String, WritableKeyPath<DomainDefinition, DomainDefinition.LifecycleAction>, [String])] = [
      ("on_poweroff", \.onPoweroff, ["destroy", "restart", "preserve", "rename-restart"]),
      ("on_reboot", \.onReboot, ["destroy", "restart", "preserve", "rename-restart"]),
      (
        "on_crash", \.onCrash,
        ["destroy", "restart", "preserve", "rename-restart", "coredump-destroy", "coredump-restart"]
      ),
    ]
    for (element, keyPath, allowed) in actions {
      guard let node = try single(root, element) else { continue }
      let text = try leafText(node)
      try oneOf(node, element, text, allowed)
      guard let action = DomainDefinition.LifecycleAction(rawValue: text), action == .destroy || action == .restart
      else {
        throw fail(node, "'\(text)' is not carried out by this host (use destroy or restart)")
      }
      definition[keyPath: keyPath] = action
    }
    if let cputune = try single(root, "cputune") {
      try expect(cputune, children: ["vcpupin"])
      for pin in cputune.children(named: "vcpupin") {
        try expect(pin, attributes: ["vcpu", "cpuset"])
        guard let text = pin.attribute("vcpu"), let vcpu = Int(text), (0..<definition.vcpus).contains(vcpu) else {
          throw fail(
            pin, "vcpu='\(pin.attribute("vcpu") ?? "")' is not a vCPU of this domain (0–\(definition.vcpus - 1))")
        }
        guard let list = pin.attribute("cpuset"), let cpus = CPUSet.parse(list, limit: 4096) else {
          throw fail(pin, "cpuset='\(pin.attribute("cpuset") ?? "")' is not a CPU list such as 0-3,^2")
        }
        if definition.vcpuPins[vcpu] != nil { throw fail(pin, "vcpu='\(vcpu)' is pinned twice") }
        definition.vcpuPins[vcpu] = CPUSet.format(cpus)
      }
    }
    for element in ["features", "clock", "cpu"] {
      if let node = try single(root, element) {
        throw fail(node, "not supported here (skvm gives every guest ACPI, an RTC on UTC and the host's CPU model)")
      }
    }
    if let devices = try single(root, "devices") { try self.devices(devices, into: &definition) }
    return definition
  }

  func kibibytes(_ node: XMLElementNode) throws(Failure) -> UInt64 {
    let text = try leafText(node, attributes: ["unit"])
    guard let value = UInt64(text) else { throw fail(node, "'\(text)' is not a whole number") }
    let unit = node.attribute("unit") ?? "KiB"
    let multipliers: [String: UInt64] = [
      "b": 1, "bytes": 1, "KB": 1000, "k": 1024, "KiB": 1024, "MB": 1_000_000, "M": 1 << 20, "MiB": 1 << 20,
      "GB": 1_000_000_000, "G": 1 << 30, "GiB": 1 << 30, "TB": 1_000_000_000_000, "T": 1 << 40, "TiB": 1 << 40,
    ]
    guard let multiplier = multipliers[unit] else {
      throw fail(node, "unit='\(unit)' is not a unit (b, KiB, MiB, GiB, TiB, KB, MB, GB, TB)")
    }
    let (bytes, overflow) = value.multipliedReportingOverflow(by: multiplier)
    guard !overflow, bytes <= (1 << 40) else { throw fail(node, "\(text) \(unit) is more than 1 TiB") }
    let kib = (bytes + 1023) / 1024
    guard kib >= 1024 else { throw fail(node, "\(text) \(unit) is less than 1 MiB") }
    return kib
  }

  mutating func operatingSystem(_ node: XMLElementNode, usesExtension: Bool) throws(Failure)
    -> DomainDefinition
    .OperatingSystem
  {
    try expect(node, children: ["type", "kernel", "initrd", "cmdline", "boot", "loader", "skvm:flat"])
    var os = DomainDefinition.OperatingSystem()
    for name in ["type", "kernel", "initrd", "cmdline", "loader", "skvm:flat"] { _ = try single(node, name) }
    if let type = try single(node, "type") {
      let text = try leafText(type, attributes: ["arch", "machine"])
      try oneOf(type, "type", text, ["hvm"])
      if let arch = type.attribute("arch") { try oneOf(type, "arch", arch, ["x86_64"]) }
      os.architecture = type.attribute("arch")
      os.machine = type.attribute("machine")
    }
    if let kernel = try single(node, "kernel") { os.kernel = try leafText(kernel) }
    if let initrd = try single(node, "initrd") { os.initrd = try leafText(initrd) }
    if let cmdline = try single(node, "cmdline") {
      try expect(cmdline)
      os.cmdline = cmdline.trimmedText
    }
    if let loader = try single(node, "loader") {
      os.loader = try leafText(loader, attributes: ["type", "readonly"])
      if let type = loader.attribute("type") { try oneOf(loader, "type", type, ["rom"]) }
    }
    for boot in node.children(named: "boot") {
      try expect(boot, attributes: ["dev"])
      guard let dev = boot.attribute("dev"), let device = DomainDefinition.BootDevice(rawValue: dev) else {
        throw fail(boot, "dev='\(boot.attribute("dev") ?? "")' is not hd, cdrom, network or fd")
      }
      if device == .fd || device == .network { throw fail(boot, "dev='\(dev)': this machine has no such boot device") }
      if os.bootDevices.contains(device) { throw fail(boot, "dev='\(dev)' given twice") }
      os.bootDevices.append(device)
    }
    if let flat = try single(node, "skvm:flat") {
      if !usesExtension { throw fail(flat, "declare xmlns:skvm='\(DomainXML.namespace)' on <domain> to use it") }
      let path = try leafText(flat, attributes: ["entry"])
      let entry = flat.attribute("entry") ?? "real"
      try oneOf(flat, "entry", entry, ["real", "long"])
      os.flat = .init(path: path, entry: entry)
    }
    let sources = [os.kernel != nil, os.flat != nil, os.loader != nil || !os.bootDevices.isEmpty].filter { $0 }
    if sources.count > 1 {
      throw fail(node, "give one of <kernel>, <skvm:flat> and firmware boot (<loader>, <boot>)")
    }
    if (os.initrd != nil || os.cmdline != nil) && (os.flat != nil || os.loader != nil || !os.bootDevices.isEmpty) {
      throw fail(node, "<initrd> and <cmdline> go with <kernel> (or the default guest)")
    }
    return os
  }

  mutating func devices(_ node: XMLElementNode, into definition: inout DomainDefinition) throws(Failure) {
    try expect(node, children: ["emulator", "disk", "interface", "serial", "console", "rng"])
    if let emulator = try single(node, "emulator") {
      _ = try leafText(emulator)
      warnings.append("<emulator> is ignored: skvmd runs every domain with skvm")
    }
    for disk in node.children(named: "disk") { definition.disks.append(try self.disk(disk)) }
    var targets = Set<String>()
    for disk in definition.disks where !targets.insert(disk.target).inserted {
      throw Failure("<disk>: target dev='\(disk.target)' is used twice")
    }
    for interface in node.children(named: "interface") {
      definition.interfaces.append(try self.interface(interface))
    }
    for serial in node.children(named: "serial") {
      definition.serials.append(try characterDevice(serial, isConsole: false))
    }
    for console in node.children(named: "console") {
      definition.consoles.append(try characterDevice(console, isConsole: true))
    }
    if definition.serials.count > 1 { throw Failure("<serial>: this machine has one serial port (COM1, port 0)") }
    let rngs = node.children(named: "rng")
    if rngs.count > 1 { throw Failure("<rng> at line \(rngs[1].line): one virtio-rng device at most") }
    if let rng = rngs.first {
      try expect(rng, attributes: ["model"], children: ["backend"])
      let model = rng.attribute("model") ?? ""
      try oneOf(rng, "model", model, ["virtio"])
      guard let backend = try single(rng, "backend") else { throw fail(rng, "needs a <backend>") }
      try expect(backend, attributes: ["model"])
      let backendModel = backend.attribute("model") ?? ""
      try oneOf(backend, "model", backendModel, ["random", "builtin"])
      let device = backend.trimmedText.isEmpty ? nil : backend.trimmedText
      if let device, !["/dev/urandom", "/dev/random", "/dev/hwrng"].contains(device) {
        throw fail(backend, "'\(device)' is not /dev/urandom, /dev/random or /dev/hwrng")
      }
      definition.rng = .init(model: model, backend: backendModel, device: device)
    }
  }

  func disk(_ node: XMLElementNode) throws(Failure) -> DomainDefinition.Disk {
    try expect(node, attributes: ["type", "device"], children: ["driver", "source", "target", "readonly"])
    for name in ["driver", "source", "target", "readonly"] { _ = try single(node, name) }
    let type = node.attribute("type") ?? "file"
    try oneOf(node, "type", type, ["file", "block"])
    let kind = node.attribute("device") ?? "disk"
    try oneOf(node, "device", kind, ["disk", "cdrom"])
    var format: String?
    var cache: String?
    if let driver = try single(node, "driver") {
      try expect(driver, attributes: ["name", "type", "cache"])
      if let name = driver.attribute("name") { try oneOf(driver, "name", name, ["qemu"]) }
      if let type = driver.attribute("type") {
        try oneOf(driver, "type", type, ["raw", "qcow2"])
        format = type
      }
      if let value = driver.attribute("cache") {
        try oneOf(driver, "cache", value, ["none", "writeback", "default"])
        cache = value == "default" ? nil : value
      }
    }
    var source: String?
    if let sourceNode = try single(node, "source") {
      let attribute = type == "block" ? "dev" : "file"
      try expect(sourceNode, attributes: [attribute])
      guard let path = sourceNode.attribute(attribute), !path.isEmpty else {
        throw fail(sourceNode, "needs \(attribute)='PATH'")
      }
      guard path.hasPrefix("/") else { throw fail(sourceNode, "'\(path)' is not an absolute path") }
      if path.contains(",") { throw fail(sourceNode, "'\(path)': a path with a comma cannot be passed to skvm") }
      source = path
    }
    if source == nil && kind == "disk" { throw fail(node, "a disk needs a <source file='…'/>") }
    guard let target = try single(node, "target") else { throw fail(node, "needs a <target dev='vda'/>") }
    try expect(target, attributes: ["dev", "bus"])
    guard let dev = target.attribute("dev"), dev.count >= 3, dev.count <= 8,
      dev.allSatisfy({ $0.isASCII && ($0.isLowercase || $0.isNumber) })
    else {
      throw fail(target, "dev='\(target.attribute("dev") ?? "")' is not a device name such as vda or sda")
    }
    let bus = target.attribute("bus")
    if kind == "disk" {
      try oneOf(target, "bus", bus ?? "virtio", ["virtio"])
    } else {
      try oneOf(target, "bus", bus ?? "scsi", ["scsi", "sata", "ide"])
    }
    if let readOnly = try single(node, "readonly") { try expect(readOnly) }
    let readOnly = try single(node, "readonly") != nil || kind == "cdrom"
    return .init(
      device: kind == "cdrom" ? .cdrom : .disk, source: source, format: format, cache: cache, readOnly: readOnly,
      target: dev, bus: bus)
  }

  func interface(_ node: XMLElementNode) throws(Failure) -> DomainDefinition.Interface {
    try expect(node, attributes: ["type"], children: ["mac", "source", "target", "model"])
    for name in ["mac", "source", "target", "model"] { _ = try single(node, name) }
    let type = node.attribute("type") ?? ""
    try oneOf(node, "type", type, ["ethernet", "bridge", "user"])
    var mac: String?
    if let macNode = try single(node, "mac") {
      try expect(macNode, attributes: ["address"])
      guard let address = macNode.attribute("address").flatMap(MACAddress.init), !address.isMulticast,
        !address.isZero
      else {
        throw fail(macNode, "address='\(macNode.attribute("address") ?? "")' is not a unicast MAC address")
      }
      mac = address.description
    }
    var model: String?
    if let modelNode = try single(node, "model") {
      try expect(modelNode, attributes: ["type"])
      model = modelNode.attribute("type") ?? ""
      try oneOf(modelNode, "type", model ?? "", ["virtio"])
    }
    var tap: String?
    if let target = try single(node, "target") {
      if type == "user" { throw fail(target, "user networking has no host device") }
      try expect(target, attributes: ["dev"])
      guard let dev = target.attribute("dev"), !dev.isEmpty, dev.utf8.count < 16,
        dev.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "-" || $0 == "_" || $0 == ".") })
      else { throw fail(target, "dev='\(target.attribute("dev") ?? "")' is not an interface name") }
      tap = dev
    }
    let kind: DomainDefinition.Interface.Kind
    switch type {
    case "bridge":
      guard let source = try single(node, "source") else { throw fail(node, "needs <source bridge='…'/>") }
      try expect(source, attributes: ["bridge"])
      guard let bridge = source.attribute("bridge"), !bridge.isEmpty, bridge.utf8.count < 16,
        bridge.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "-" || $0 == "_" || $0 == ".") })
      else { throw fail(source, "bridge='\(source.attribute("bridge") ?? "")' is not an interface name") }
      kind = .bridge(bridge, tap: tap)
    case "ethernet":
      if let source = try single(node, "source") { throw fail(source, "type='ethernet' takes no <source>") }
      kind = .ethernet(tap: tap)
    default:
      if let source = try single(node, "source") { throw fail(source, "type='user' takes no <source>") }
      kind = .user
    }
    return .init(kind: kind, mac: mac, model: model)
  }

  func characterDevice(_ node: XMLElementNode, isConsole: Bool) throws(Failure) -> DomainDefinition.CharacterDevice {
    try expect(node, attributes: ["type"], children: ["source", "target", "log"])
    let type = node.attribute("type") ?? "pty"
    try oneOf(node, "type", type, ["pty", "file", "null"])
    var device = DomainDefinition.CharacterDevice(type: type)
    if let source = try single(node, "source") {
      guard type == "file" else { throw fail(source, "type='\(type)' takes no <source>") }
      try expect(source, attributes: ["path"])
      guard let path = source.attribute("path"), path.hasPrefix("/") else {
        throw fail(source, "needs an absolute path='…'")
      }
      device.path = path
    } else if type == "file" {
      throw fail(node, "type='file' needs <source path='…'/>")
    }
    if let log = try single(node, "log") {
      throw fail(log, "not supported: skvmd keeps every console's output in its log")
    }
    if let target = try single(node, "target") {
      try expect(target, attributes: isConsole ? ["type", "port"] : ["port", "type"])
      if let port = target.attribute("port") {
        guard port == "0" else { throw fail(target, "port='\(port)': this machine has one serial port (port 0)") }
        device.port = 0
      }
      if let targetType = target.attribute("type") {
        try oneOf(target, "type", targetType, isConsole ? ["serial"] : ["isa-serial"])
        device.targetType = targetType
      }
    }
    return device
  }
}
