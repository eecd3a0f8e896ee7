/// The `skvm run` command line that runs a domain, and what must be true before it can start.
public enum DomainLaunch {
  /// The arguments after `skvm` for `definition`, its monitor at `monitorPath` and its serial
  /// console also on `consolePath`.
  public static func arguments(for definition: DomainDefinition, monitorPath: String, consolePath: String? = nil)
    -> [String]
  {
    // --paused: the vCPUs run when the daemon, connected, says cont, so that it hears every
    // event, even of a guest that powers off or resets at once.
    var arguments = ["run", "--name", definition.name, "--qmp", "unix:\(monitorPath)", "--paused"]
    if let consolePath { arguments += ["--console-socket", consolePath] }
    arguments += ["--memory", "\((definition.memoryKiB + 1023) / 1024)M", "--cpus", String(definition.vcpus)]
    arguments += ["--console", "serial"]
    let os = definition.os
    if let kernel = os.kernel { arguments += ["--kernel", kernel] }
    if let initrd = os.initrd { arguments += ["--initrd", initrd] }
    if let cmdline = os.cmdline { arguments += ["--cmdline", cmdline] }
    if let flat = os.flat { arguments += ["--flat", flat.path, "--flat-entry", flat.entry] }
    if let loader = os.loader { arguments += ["--bios", loader] }
    if !os.bootDevices.isEmpty {
      let order = os.bootDevices.compactMap { device -> String? in
        switch device {
        case .hd: "c"
        case .cdrom: "d"
        case .network, .fd: nil
        }
      }
      arguments += ["--boot", "order=" + order.joined()]
    }
    for disk in definition.disks where disk.device == .disk {
      guard let source = disk.source else { continue }
      var value = source
      if let format = disk.format { value += ",format=\(format)" }
      if disk.readOnly { value += ",readonly=on" }
      if let cache = disk.cache { value += ",cache=\(cache)" }
      arguments += ["--disk", value]
    }
    if let cdrom = definition.disks.first(where: { $0.device == .cdrom }), let source = cdrom.source {
      arguments += ["--cdrom", source]
    }
    if definition.interfaces.isEmpty {
      arguments += ["--net", "none"]
    }
    for (index, interface) in definition.interfaces.enumerated() {
      var value: String
      switch interface.kind {
      case .user: value = "user"
      case .ethernet(let tap): value = "tap,ifname=\(tap ?? tapName(definition, index))"
      case .bridge(let bridge, let tap): value = "tap,ifname=\(tap ?? tapName(definition, index)),bridge=\(bridge)"
      }
      if let mac = interface.mac { value += ",mac=\(mac)" }
      arguments += ["--net", value]
    }
    if definition.rng != nil { arguments.append("--rng") }
    return arguments
  }

  /// A tap name for an interface that names none: `skvm` + 6 hex digits of the UUID + its index.
  static func tapName(_ definition: DomainDefinition, _ index: Int) -> String {
    "skv" + definition.uuid.uuidString.lowercased().prefix(8) + "n\(index)"
  }

  /// Files the domain needs that are missing (disks, kernel, initrd, firmware, flat binary).
  public static func missingFiles(_ definition: DomainDefinition, exists: (String) -> Bool) -> [String] {
    var paths = definition.disks.compactMap(\.source)
    paths += [definition.os.kernel, definition.os.initrd, definition.os.loader, definition.os.flat?.path].compactMap {
      $0
    }
    return paths.filter { !exists($0) }
  }
}
