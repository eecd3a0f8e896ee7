import ArgumentParser
import FoundationEssentials
import Glibc
import ManagementClient
import ManagementModel

/// Every domain the daemon has.
func allDomains() async throws -> [DomainSummary] {
  try Connection.decode([DomainSummary].self, try await Connection.call(.GET, "/v1/domains"))
}

/// One domain's `dominfo`.
func info(_ reference: String) async throws -> DomainInfo {
  try Connection.decode(DomainInfo.self, try await Connection.call(.GET, Connection.domainPath(reference)))
}

struct List: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "list", abstract: "List domains (the running ones unless --all).")
  @Flag(help: "Inactive domains too.") var all = false
  @Flag(help: "Only the inactive ones.") var inactive = false
  @Flag(help: "Print only names.") var name = false
  @Flag(help: "Print only UUIDs.") var uuid = false
  @Flag(help: "Add each domain's title.") var title = false
  @Flag(name: .customLong("state-running"), help: "Only running domains.") var stateRunning = false
  @Flag(name: .customLong("state-paused"), help: "Only paused domains.") var statePaused = false
  @Flag(name: .customLong("state-shutoff"), help: "Only shut-off domains.") var stateShutoff = false
  @Flag(help: "Only domains that autostart.") var autostart = false
  @Flag(help: "Only persistent domains.") var persistent = false
  @Flag(help: "Only transient domains.") var transient = false

  func run() async throws {
    var domains = try await allDomains()
    let stateFilter = stateRunning || statePaused || stateShutoff
    domains = domains.filter { domain in
      if stateFilter {
        return (stateRunning && domain.state == .running) || (statePaused && domain.state == .paused)
          || (stateShutoff && domain.state == .shutOff)
      }
      if inactive { return !domain.state.isActive }
      return all || domain.state.isActive
    }
    if autostart { domains = domains.filter(\.autostart) }
    if persistent { domains = domains.filter(\.persistent) }
    if transient { domains = domains.filter { !$0.persistent } }
    domains.sort { ($0.id ?? Int.max, $0.name) < ($1.id ?? Int.max, $1.name) }
    if name || uuid {
      for domain in domains {
        say([uuid ? domain.uuid : nil, name ? domain.name : nil].compactMap { $0 }.joined(separator: " "))
      }
      say("")
      return
    }
    var table = title ? Table("Id", "Name", "State", "Title") : Table("Id", "Name", "State")
    for domain in domains {
      let id = domain.id.map(String.init) ?? "-"
      if title {
        table.add(id, domain.name, domain.state.rawValue, domain.title ?? "")
      } else {
        table.add(id, domain.name, domain.state.rawValue)
      }
    }
    writeOutput(Array((table.text + "\n").utf8))
  }
}

struct DomInfo: AsyncParsableCommand {
  static let configuration = CommandConfiguration(commandName: "dominfo", abstract: "Print basic facts about a domain.")
  @Argument(help: "The domain's name, UUID or id.") var domain: String

  func run() async throws {
    let facts = try await info(domain)
    let summary = facts.summary
    let lines: [(String, String)] = [
      ("Id", summary.id.map(String.init) ?? "-"), ("Name", summary.name), ("UUID", summary.uuid),
      ("OS Type", facts.osType), ("State", summary.state.rawValue), ("CPU(s)", String(facts.vcpus)),
      ("Max memory", "\(facts.maxMemoryKiB) KiB"), ("Used memory", "\(facts.usedMemoryKiB) KiB"),
      ("Persistent", summary.persistent ? "yes" : "no"), ("Autostart", summary.autostart ? "enable" : "disable"),
      ("Template", summary.template ? "yes" : "no"), ("Managed save", "no"), ("Log", facts.log),
    ]
    var text = ""
    for (label, value) in lines {
      let padded = label + ":" + String(repeating: " ", count: max(1, 16 - label.count - 1))
      text += padded + value + "\n"
    }
    writeOutput(Array((text + "\n").utf8))
  }
}

struct DomState: AsyncParsableCommand {
  static let configuration = CommandConfiguration(commandName: "domstate", abstract: "Print a domain's state.")
  @Argument(help: "The domain's name, UUID or id.") var domain: String
  @Flag(help: "Add why it is in that state.") var reason = false

  func run() async throws {
    let summary = try await info(domain).summary
    say(reason ? "\(summary.state.rawValue) (\(summary.reason.rawValue))" : summary.state.rawValue)
    say("")
  }
}

struct DomUUID: AsyncParsableCommand {
  static let configuration = CommandConfiguration(commandName: "domuuid", abstract: "Print a domain's UUID.")
  @Argument(help: "The domain's name or id.") var domain: String
  func run() async throws { say(try await info(domain).summary.uuid + "\n") }
}

struct DomName: AsyncParsableCommand {
  static let configuration = CommandConfiguration(commandName: "domname", abstract: "Print a domain's name.")
  @Argument(help: "The domain's UUID or id.") var domain: String
  func run() async throws { say(try await info(domain).summary.name + "\n") }
}

struct DomID: AsyncParsableCommand {
  static let configuration = CommandConfiguration(commandName: "domid", abstract: "Print a running domain's id.")
  @Argument(help: "The domain's name or UUID.") var domain: String
  func run() async throws { say((try await info(domain).summary.id.map(String.init) ?? "-") + "\n") }
}

struct DomBlkList: AsyncParsableCommand {
  static let configuration = CommandConfiguration(commandName: "domblklist", abstract: "List a domain's disks.")
  @Argument(help: "The domain's name, UUID or id.") var domain: String
  @Flag(help: "Add the type and device columns.") var details = false

  func run() async throws {
    var table = details ? Table("Type", "Device", "Target", "Source") : Table("Target", "Source")
    for disk in try await info(domain).disks {
      if details {
        table.add("file", disk.device, disk.target, disk.source ?? "-")
      } else {
        table.add(disk.target, disk.source ?? "-")
      }
    }
    writeOutput(Array((table.text + "\n").utf8))
  }
}

struct DomIfList: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "domiflist", abstract: "List a domain's network interfaces.")
  @Argument(help: "The domain's name, UUID or id.") var domain: String

  func run() async throws {
    var table = Table("Interface", "Type", "Source", "Model", "MAC")
    for interface in try await info(domain).interfaces {
      table.add(interface.device ?? "-", interface.type, interface.source ?? "-", interface.model, interface.mac ?? "-")
    }
    writeOutput(Array((table.text + "\n").utf8))
  }
}

struct Version: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "version", abstract: "Print the CLI's and the daemon's versions.")

  func run() async throws {
    let version = try Connection.decode(APIVersion.self, try await Connection.call(.GET, "/v1/version"))
    say("Compiled against library: skvm \(ManagementVersion.current)")
    say("Running against daemon: skvmd \(version.version) (\(version.stateDirectory))")
  }
}

struct VCPUPinVerb: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "vcpupin",
    abstract: "Show or set the host CPUs each vCPU may run on.",
    discussion: """
      With a vCPU and a CPU list (0-3,^2,6), pins that vCPU: in the running domain (--live), in its \
      definition (--config, applied at every start), or by default the running domain if it runs, else \
      the definition.
      """)
  @Argument(help: "The domain's name, UUID or id.") var domain: String
  @Argument(help: "The vCPU to pin.") var vcpu: Int?
  @Argument(help: "Its host CPUs.") var cpulist: String?
  @Flag(help: "Pin in the running domain.") var live = false
  @Flag(help: "Pin in the definition.") var config = false
  @Flag(help: "The running domain if it runs, else the definition (the default).") var current = false

  func run() async throws {
    var pins: [VCPUPin]
    if let vcpu {
      guard let cpulist else { throw CLIError("give the host CPUs to pin vCPU \(vcpu) to, e.g. 0-1") }
      let request = VCPUPinRequest(
        vcpu: vcpu, cpuset: cpulist, live: live ? true : (config ? false : nil),
        config: config ? true : (live ? false : nil))
      let body = try await Connection.call(
        .PUT, Connection.domainPath(domain, "/vcpupin"), body: Array(try JSONEncoder().encode(request)))
      pins = try Connection.decode([VCPUPin].self, body)
      if config && !live { return }
      pins = pins.filter { $0.vcpu == vcpu }
    } else {
      pins = try Connection.decode(
        [VCPUPin].self, try await Connection.call(.GET, Connection.domainPath(domain, "/vcpupin")))
    }
    var table = Table("VCPU", "CPU Affinity")
    for pin in pins { table.add(String(pin.vcpu), pin.cpuset) }
    writeOutput(Array((table.text + "\n").utf8))
  }
}
