import Checked
import Devices
import Glibc
import TextFormat
import VMM

/// QEMU's human monitor (HMP) commands, as `human-monitor-command` and `skvm monitor` run them.
/// Output lines end in "\r\n", as QEMU's do.
struct HumanMonitor {
  unowned let commands: QMPCommands

  struct Reply {
    var text: String
    var afterReply: (@Sendable () -> Void)? = nil
  }

  static let help = """
    cont|c -- resume emulation
    delvm tag -- delete internal snapshot tag
    loadvm tag -- restore internal snapshot tag (disks and machine)
    migrate uri -- move the running machine to tcp:HOST:PORT (skvm run --incoming there), or save it to file:PATH (it stays stopped)
    migrate_cancel -- cancel the current live migration (the machine runs on)
    migrate_set_parameter name value -- downtime-limit (ms) or max-bandwidth (bytes/s, 0: no limit)
    help|? -- show this help
    info cpus -- show infos for each CPU
    info migrate -- show migration status
    info snapshots -- show the internal snapshots (savevm)
    info kvm -- show KVM information
    info name -- show the current VM name
    info qtree -- show device tree
    info pci -- show PCI info
    info network -- show the network state
    info registers [-a] -- show the cpu registers (-a: all CPUs)
    info status -- show the current VM status (running|paused)
    info version -- show the version of SwiftKVM
    quit|q -- quit the emulator
    savevm [tag] -- save the machine as internal snapshot tag of its qcow2 disks
    set_link name on|off -- change the link status of a network adapter
    stop -- stop emulation
    system_powerdown -- send system power down event
    system_reset -- reset the system
    """

  func execute(_ line: String, cpuIndex: Int) -> Reply {
    let words = line.split(whereSeparator: { $0 == " " || $0 == "\t" }).map(String.init)
    guard let verb = words.first else { return Reply(text: "") }
    let machine = commands.machine
    switch verb {
    case "help", "?":
      return Reply(text: Self.help.replacingNewlines() + "\r\n")
    case "info":
      return Reply(text: info(Array(words.dropFirst()), cpuIndex: cpuIndex))
    case "stop":
      machine.pause()
    case "cont", "c":
      machine.resume()
    case "system_reset":
      machine.reset()
    case "system_powerdown":
      machine.pressPowerButton()
    case "savevm":
      let tag = words.count > 1 ? words[1] : Self.defaultSnapshotName()
      do throws(VirtualMachineError) { try machine.saveInternalSnapshot(named: tag) } catch {
        return Reply(text: "Error: \(error.description)\r\n")
      }
    case "loadvm", "delvm":
      guard words.count > 1 else { return Reply(text: "\(verb): a snapshot name is needed\r\n") }
      do throws(VirtualMachineError) {
        if verb == "loadvm" {
          try machine.loadInternalSnapshot(named: words[1])
        } else {
          try machine.deleteInternalSnapshot(named: words[1])
        }
      } catch {
        return Reply(text: "Error: \(error.description)\r\n")
      }
    case "migrate":
      guard let uri = words.dropFirst().last(where: { !$0.hasPrefix("-") }) else {
        return Reply(text: "migrate: a URI is needed (tcp:HOST:PORT or file:PATH)\r\n")
      }
      do throws(QMPError) { try commands.migrate(to: uri.trimmingQuotes) } catch {
        return Reply(text: "Error: \(error.description)\r\n")
      }
    case "migrate_cancel":
      machine.cancelMigration()
    case "migrate_set_parameter":
      guard words.count == 3, let value = UInt64(words[2]), ["downtime-limit", "max-bandwidth"].contains(words[1])
      else {
        return Reply(text: "migrate_set_parameter: usage: migrate_set_parameter downtime-limit|max-bandwidth VALUE\r\n")
      }
      var parameters = machine.migrationParameters
      if words[1] == "downtime-limit" {
        guard value >= 1 else { return Reply(text: "Error: downtime-limit must be at least 1 ms\r\n") }
        parameters.downtimeLimitMilliseconds = value
      } else {
        parameters.maximumBandwidth = value
      }
      machine.migrationParameters = parameters
    case "set_link":
      guard words.count == 3, ["on", "off", "up", "down"].contains(words[2]) else {
        return Reply(text: "set_link: usage: set_link NAME on|off\r\n")
      }
      do throws(QMPError) {
        try NetworkReport.setLink(machine.machine, name: words[1], up: words[2] == "on" || words[2] == "up")
      } catch {
        return Reply(text: "Error: \(error.description)\r\n")
      }
    case "quit", "q":
      return Reply(text: "") { machine.stop(cause: .hostQMPQuit, reason: "quit (monitor)") }
    default:
      return Reply(text: "unknown command: '\(verb)'\r\n")
    }
    return Reply(text: "")
  }

  private func info(_ words: [String], cpuIndex: Int) -> String {
    let machine = commands.machine
    switch words.first {
    case "status":
      switch machine.runState {
      case .postmigrate: return "VM status: paused (postmigrate)\r\n"
      case let state: return "VM status: \(state.rawValue)\r\n"
      }
    case "snapshots":
      return snapshots
    case "migrate":
      let info = commands.machine.migration
      guard info.status != .none else { return "" }
      var text = "Migration status: \(info.status.rawValue)\r\n"
      if let ram = info.ram {
        text += "total time: \(Int(info.totalMilliseconds.rounded())) ms\r\n"
        if info.status == .completed { text += "downtime: \(Int(info.downtimeMilliseconds.rounded())) ms\r\n" }
        text += "setup: \(Int(info.setupMilliseconds.rounded())) ms\r\n"
        text += "transferred ram: \(ram.transferred >> 10) kbytes\r\nremaining ram: \(ram.remaining >> 10) kbytes\r\n"
        text += "total ram: \(ram.total >> 10) kbytes\r\nduplicate: \(ram.zeroPages) pages\r\n"
        text += "normal: \(ram.normalPages) pages\r\ndirty sync count: \(ram.passes)\r\n"
        text += "dirty pages rate: \(ram.dirtyPagesRate) pages\r\n"
        text += "throughput: \((ram.mbps * 100).rounded() / 100) mbps\r\n"
      } else if info.status == .completed {
        text += "total time: \(Int(info.totalMilliseconds.rounded())) ms\r\n"
        text += "downtime: \(Int(info.downtimeMilliseconds.rounded())) ms\r\n"
        text += "transferred ram: \(info.fileBytes >> 10) kbytes\r\ntotal ram: \(info.ramBytes >> 10) kbytes\r\n"
      }
      if let error = info.error { text += "error: \(error)\r\n" }
      return text
    case "kvm":
      return "kvm support: enabled\r\n"
    case "name":
      return "\(machine.configuration.name)\r\n"
    case "version":
      return "\(SwiftKVMVersion.current) (SwiftKVM)\r\n"
    case "cpus":
      return machine.machine.vcpuThreadIDs.enumerated().map { index, thread in
        "\(index == cpuIndex ? "*" : " ") CPU #\(index): thread_id=\(thread)\r\n"
      }.joined()
    case "registers":
      let all = words.dropFirst().contains("-a")
      return machine.withVCPUsParked { vcpus in
        guard all || vcpus.indices.contains(cpuIndex) else { return "No CPU #\(cpuIndex)\r\n" }
        let chosen = all ? vcpus : [vcpus[cpuIndex]]
        return chosen.map { RegisterDump.text(of: $0) }.joined(separator: all ? "\r\n" : "")
      }
    case "qtree":
      return qtree
    case "pci":
      return pci
    case "network":
      return NetworkReport.text(machine.machine.networkInterfaces)
    case nil:
      return "info: a subcommand is needed: status, kvm, name, version, cpus, registers, qtree, pci, network\r\n"
    case let other?:
      return "info: unknown subcommand '\(other)'\r\n"
    }
  }

  /// The PCI functions, in QEMU's `info pci` format.
  private var pci: String { PCIReport.human(commands.machine.machine.pciFunctions) }

  /// `info snapshots`, in QEMU's table.
  private var snapshots: String {
    let list: [VirtualMachine.InternalSnapshot]
    do { list = try commands.machine.internalSnapshots() } catch { return "Error: \(error.description)\r\n" }
    guard !list.isEmpty else { return "There is no snapshot available.\r\n" }
    func pad(_ text: String, _ width: Int) -> String {
      text + String(repeating: " ", count: max(1, width - text.count))
    }
    var lines = [
      "List of snapshots present on all disks:",
      "ID        TAG               VM SIZE                DATE     VM CLOCK     ICOUNT",
    ]
    for entry in list {
      let size = entry.vmStateSize >= 1 << 20 ? "\(entry.vmStateSize >> 20) MiB" : "\(entry.vmStateSize >> 10) KiB"
      let clock = SnapshotListFormat.vmClock(nanoseconds: entry.vmClockNanoseconds)
      lines.append(
        pad(entry.id, 10) + pad(entry.name, 18) + pad(size, 23) + pad(SnapshotListFormat.date(entry.dateSeconds), 9)
          + clock)
    }
    return lines.map { $0 + "\r\n" }.joined()
  }

  /// QEMU's default snapshot name: vm-YYYYMMDDHHMMSS.
  static func defaultSnapshotName() -> String {
    var now = time(nil)
    var parts = tm()
    localtime_r(&now, &parts)
    return cFormat(
      "vm-%04d%02d%02d%02d%02d%02d", parts.tm_year + 1900, parts.tm_mon + 1, parts.tm_mday,
      parts.tm_hour, parts.tm_min, parts.tm_sec)
  }

  /// The machine's devices, grouped by address space, in the spirit of QEMU's `info qtree`.
  private var qtree: String {
    let machine = commands.machine.machine
    var lines = [
      "bus: main-system-bus", "  type System", "  dev: kvm-irqchip (in-kernel PIC, IOAPIC, LAPICs)",
      "  dev: kvm-pit (in-kernel i8254)", "  dev: vcpus, count = \(machine.configuration.cpuCount)",
    ]
    for bus in [machine.portBus, machine.mmioBus] {
      lines.append("  bus: \(bus.kind == .port ? "isa.0 (I/O ports)" : "mmio (guest-physical)")")
      for mapping in bus.allMappings.sorted(by: { $0.base < $1.base }) {
        let last = mapping.base + mapping.size - 1
        lines.append(
          "    dev: \(String(describing: type(of: mapping.device))), "
            + "0x\(String(mapping.base, radix: 16))-0x\(String(last, radix: 16))")
      }
    }
    return lines.joined(separator: "\r\n") + "\r\n"
  }
}

extension String {
  fileprivate func replacingNewlines() -> String {
    split(separator: "\n", omittingEmptySubsequences: false).joined(separator: "\r\n")
  }
}

extension String {
  /// The string without one pair of surrounding double quotes (HMP arguments may be quoted).
  fileprivate var trimmingQuotes: String {
    count >= 2 && hasPrefix("\"") && hasSuffix("\"") ? String(dropFirst().dropLast()) : self
  }
}
