import DiskImage
import Glibc
import JSON
import VMM

/// The QMP commands skvm implements, over one managed machine.
///
/// Each command takes its checked arguments and returns the `return` value; a command
/// may also leave work to be done once its reply is on the wire (`quit`).
final class QMPCommands: QMPCommandSet, @unchecked Sendable {
  /// A command's result: the `return` value and what to do after it has been sent.
  struct Outcome {
    var value: JSONValue
    var afterReply: (@Sendable () -> Void)?
  }

  private typealias Handler = ([String: JSONValue]) throws(QMPError) -> Outcome

  let machine: ManagedMachine
  /// `query-chardev`'s answer beyond the serial port: the monitors' own sockets.
  let monitorAddresses: [MonitorAddress]
  /// What `query-chardev` says the serial port is connected to ("stdio", "null").
  let serialBackend: String
  private lazy var human = HumanMonitor(commands: self)
  private lazy var jobs = QMPJobs(machine: machine)
  private var table: [String: Handler] = [:]

  init(machine: ManagedMachine, monitorAddresses: [MonitorAddress], serialBackend: String) {
    self.machine = machine
    self.monitorAddresses = monitorAddresses
    self.serialBackend = serialBackend
    table = [
      "query-version": noArguments { Self.version },
      "query-commands": noArguments { [unowned self] in .array(self.names.map { ["name": .string($0)] }) },
      "query-name": noArguments { [unowned self] in ["name": .string(self.machine.configuration.name)] },
      "query-status": noArguments { [unowned self] in self.status },
      "query-kvm": noArguments { ["enabled": true, "present": true] },
      "query-cpus-fast": noArguments { [unowned self] in self.cpus },
      "query-block": noArguments { [unowned self] in self.blocks },
      "query-chardev": noArguments { [unowned self] in self.chardevs },
      "query-pci": noArguments { [unowned self] in self.pci },
      "query-rx-filter": { [unowned self] arguments throws(QMPError) in
        let checked = try QMPArguments(arguments, allowed: ["name"])
        let interfaces = self.machine.machine.networkInterfaces
        return Outcome(value: try NetworkReport.receiveFilters(interfaces, name: try checked.string("name")))
      },
      "set_link": { [unowned self] arguments throws(QMPError) in
        let checked = try QMPArguments(arguments, allowed: ["name", "up"])
        let name = try checked.requiredString("name")
        guard let up = try checked.boolean("up") else { throw QMPError(.genericError, "Parameter 'up' is missing") }
        try NetworkReport.setLink(self.machine.machine, name: name, up: up)
        return Outcome(value: [:])
      },
      "stop": action { [unowned self] in self.machine.pause() },
      "cont": action { [unowned self] in self.machine.resume() },
      "system_reset": action { [unowned self] in self.machine.reset() },
      "system_powerdown": action { [unowned self] in self.machine.pressPowerButton() },
      "quit": { [unowned self] arguments throws(QMPError) in
        _ = try QMPArguments(arguments, allowed: [])
        let machine = self.machine
        return Outcome(value: [:]) { machine.stop(cause: .hostQMPQuit, reason: "quit (QMP)") }
      },
      "migrate": { [unowned self] arguments throws(QMPError) in
        let checked = try QMPArguments(arguments, allowed: ["uri", "detach", "resume", "blk", "inc"])
        try self.migrate(to: try checked.requiredString("uri"))
        return Outcome(value: [:])
      },
      "query-migrate": noArguments { [unowned self] in self.migrationInfo },
      "migrate_cancel": action { [unowned self] in self.machine.cancelMigration() },
      "migrate-set-parameters": { [unowned self] arguments throws(QMPError) in
        let checked = try QMPArguments(arguments, allowed: ["downtime-limit", "max-bandwidth"])
        var parameters = self.machine.migrationParameters
        if let limit = try checked.integer("downtime-limit") {
          guard (1...2_000_000).contains(limit) else {
            throw QMPError(
              .genericError, "Parameter 'downtime-limit' expects an integer in the range of 0 to 2000 seconds")
          }
          parameters.downtimeLimitMilliseconds = UInt64(limit)
        }
        if let bandwidth = try checked.integer("max-bandwidth") {
          guard bandwidth >= 0 else {
            throw QMPError(.genericError, "Parameter 'max-bandwidth' expects a non-negative number of bytes per second")
          }
          parameters.maximumBandwidth = UInt64(bandwidth)
        }
        self.machine.migrationParameters = parameters
        return Outcome(value: [:])
      },
      "query-migrate-parameters": noArguments { [unowned self] in
        let parameters = self.machine.migrationParameters
        return [
          "downtime-limit": .number(Int64(parameters.downtimeLimitMilliseconds)),
          "max-bandwidth": .number(Int64(parameters.maximumBandwidth)),
        ]
      },
      "snapshot-save": { [unowned self] arguments throws(QMPError) in
        try self.snapshotJob("snapshot-save", arguments, vmstate: true) { machine, tag in
          try machine.saveInternalSnapshot(named: tag)
        }
      },
      "snapshot-load": { [unowned self] arguments throws(QMPError) in
        try self.snapshotJob("snapshot-load", arguments, vmstate: true) { machine, tag in
          try machine.loadInternalSnapshot(named: tag)
        }
      },
      "snapshot-delete": { [unowned self] arguments throws(QMPError) in
        try self.snapshotJob("snapshot-delete", arguments, vmstate: false) { machine, tag in
          try machine.deleteInternalSnapshot(named: tag)
        }
      },
      "query-jobs": noArguments { [unowned self] in self.jobs.list },
      "job-dismiss": { [unowned self] arguments throws(QMPError) in
        let checked = try QMPArguments(arguments, allowed: ["id"])
        try self.jobs.dismiss(try checked.requiredString("id"))
        return Outcome(value: [:])
      },
      "human-monitor-command": { [unowned self] arguments throws(QMPError) in
        let checked = try QMPArguments(arguments, allowed: ["command-line", "cpu-index"])
        let line = try checked.requiredString("command-line")
        let cpu = try checked.integer("cpu-index") ?? 0
        let reply = self.human.execute(line, cpuIndex: cpu)
        return Outcome(value: .string(reply.text), afterReply: reply.afterReply)
      },
    ]
  }

  /// Every command name, `qmp_capabilities` included, sorted.
  var names: [String] { (Array(table.keys) + ["qmp_capabilities"]).sorted() }

  /// Runs `name`; `CommandNotFound` if there is no such command.
  func execute(_ name: String, arguments: [String: JSONValue]) throws(QMPError) -> Outcome {
    guard let handler = table[name] else {
      throw QMPError(.commandNotFound, "The command \(name) has not been found")
    }
    return try handler(arguments)
  }

  private func noArguments(_ body: @escaping () -> JSONValue) -> Handler {
    return { arguments throws(QMPError) in
      _ = try QMPArguments(arguments, allowed: [])
      return Outcome(value: body())
    }
  }

  /// A command that takes no arguments, does something and returns an empty object.
  private func action(_ body: @escaping () -> Void) -> Handler {
    noArguments {
      body()
      return [:]
    }
  }

  /// The block devices' names, as `query-block` gives them (virtio0, virtio1, …), with their
  /// paths: the snapshot jobs name disks either way.
  private var deviceNames: [(name: String, path: String, readOnly: Bool)] {
    machine.configuration.disks.enumerated().map { ("virtio\($0)", $1.path, $1.readOnly) }
  }

  /// A snapshot job: checks its arguments as QEMU does (job-id, tag, vmstate, devices — the
  /// devices must be the writable disks, the VM state on the first of them), then runs `work`.
  private func snapshotJob(
    _ type: String, _ arguments: [String: JSONValue], vmstate: Bool,
    _ work: @escaping @Sendable (ManagedMachine, String) throws -> Void
  ) throws(QMPError) -> Outcome {
    let checked = try QMPArguments(
      arguments, allowed: vmstate ? ["job-id", "tag", "vmstate", "devices"] : ["job-id", "tag", "devices"])
    let id = try checked.requiredString("job-id")
    let tag = try checked.requiredString("tag")
    let writable = deviceNames.filter { !$0.readOnly }
    func known(_ name: String) -> Bool { writable.contains { $0.name == name || $0.path == name } }
    let devices = try checked.stringArray("devices") ?? []
    for device in devices where !known(device) {
      throw QMPError(
        .genericError,
        "No writable block device '\(device)' (the writable disks: "
          + writable.map(\.name).joined(separator: ", ") + ")")
    }
    if vmstate {
      let holder = try checked.requiredString("vmstate")
      guard let first = writable.first, holder == first.name || holder == first.path else {
        throw QMPError(
          .genericError, "skvm keeps the VM state on the first writable disk (\(writable.first?.name ?? "none"))")
      }
    }
    let machine = self.machine
    try jobs.start(id: id, type: type) { try work(machine, tag) }
    return Outcome(value: [:])
  }

  /// Starts a migration to `uri` on a thread of its own: `file:PATH` saves the machine to a
  /// snapshot file, `tcp:HOST:PORT` moves it live to `skvm run --incoming tcp:…` there. The
  /// reply comes at once; `MIGRATION` events and `query-migrate` tell how it goes.
  func migrate(to uri: String) throws(QMPError) {
    enum Target {
      case file(String)
      case tcp(MigrationAddress)
    }
    let target: Target
    if uri.hasPrefix("file:"), uri.count > 5 {
      target = .file(String(uri.dropFirst(5)))
    } else if uri.hasPrefix("tcp:") {
      do { target = .tcp(try MigrationAddress(parsing: uri)) } catch {
        throw QMPError(.genericError, "Invalid migration URI \(error.description)")
      }
    } else {
      throw QMPError(
        .genericError, "Invalid migration URI '\(uri)': skvm migrates to tcp:HOST:PORT or saves to file:PATH")
    }
    guard ![.setup, .active, .device].contains(machine.migration.status) else {
      throw QMPError(.genericError, "There's a migration process in progress")
    }
    let machine = self.machine
    machine.announceMigration()
    do {
      _ = try OSThread(name: "migrate") {
        switch target {
        case .file(let path): _ = try? machine.saveSnapshot(to: path)
        case .tcp(let address): _ = try? machine.migrate(to: address)
        }
      }
    } catch {
      throw QMPError(.genericError, "cannot start the migration: \(error)")
    }
  }

  /// `query-migrate`'s answer, in QEMU's `MigrationInfo` shape.
  var migrationInfo: JSONValue {
    let info = machine.migration
    guard info.status != .none else { return [:] }
    var result: [String: JSONValue] = ["status": .string(info.status.rawValue)]
    if [.active, .device, .completed, .failed, .cancelled].contains(info.status) {
      result["total-time"] = .number(Int64(info.totalMilliseconds.rounded()))
    }
    if info.status == .completed {
      result["downtime"] = .number(Int64(info.downtimeMilliseconds.rounded()))
    }
    if let ram = info.ram {
      result["setup-time"] = .number(Int64(info.setupMilliseconds.rounded()))
      if info.status == .active {
        result["expected-downtime"] = .number(Int64(ram.expectedDowntimeMilliseconds.rounded()))
      }
      result["ram"] = [
        "transferred": .number(Int64(ram.transferred)), "total": .number(Int64(ram.total)),
        "remaining": .number(Int64(ram.remaining)), "duplicate": .number(Int64(ram.zeroPages)),
        "normal": .number(Int64(ram.normalPages)), "normal-bytes": .number(Int64(ram.normalPages * 4096)),
        "dirty-sync-count": .number(Int64(ram.passes)), "mbps": .double(ram.mbps),
        "dirty-pages-rate": .number(Int64(ram.dirtyPagesRate)), "page-size": 4096,
      ]
    } else if info.status == .completed {
      result["ram"] = [
        "transferred": .number(info.fileBytes), "total": .number(info.ramBytes), "remaining": 0, "duplicate": 0,
        "normal": 0, "normal-bytes": 0, "dirty-sync-count": 1, "mbps": 0, "dirty-pages-rate": 0,
      ]
    }
    if let error = info.error { result["error-desc"] = .string(error) }
    return .object(result)
  }

  /// The `version` member of the greeting and of `query-version`: SwiftKVM's own version.
  static var version: JSONValue {
    let parts = SwiftKVMVersion.current.split(separator: ".").map { Int($0) ?? 0 } + [0, 0, 0]
    return [
      "qemu": ["major": .number(parts[0]), "minor": .number(parts[1]), "micro": .number(parts[2])],
      "package": .string("SwiftKVM \(SwiftKVMVersion.current)"),
    ]
  }

  var status: JSONValue {
    let state = machine.runState
    return ["running": .bool(state == .running), "singlestep": false, "status": .string(state.rawValue)]
  }

  var cpus: JSONValue {
    .array(
      machine.machine.vcpuThreadIDs.enumerated().map { index, thread in
        [
          "cpu-index": .number(index), "qom-path": .string("/machine/unattached/device[\(index)]"),
          "thread-id": .number(thread), "target": "x86_64",
          "props": ["core-id": .number(index), "thread-id": 0, "socket-id": 0],
        ]
      })
  }

  /// One entry per --disk, in QEMU's shape (the `inserted` medium with its file and driver).
  var blocks: JSONValue {
    .array(
      machine.configuration.disks.enumerated().map { index, disk in
        [
          "device": .string("virtio\(index)"),
          "qdev": .string("/machine/peripheral-anon/device[\(index)]/virtio-backend"),
          "locked": false, "removable": false, "type": "unknown",
          "inserted": [
            "file": .string(disk.path), "ro": .bool(disk.readOnly),
            "drv": .string((disk.format ?? (try? DiskImage.detectFormat(disk.path)) ?? .raw).rawValue),
            "encrypted": false, "backing_file_depth": 0, "detect_zeroes": "off", "bps": 0, "bps_rd": 0, "bps_wr": 0,
            "iops": 0, "iops_rd": 0, "iops_wr": 0, "write_threshold": 0,
            "cache": ["writeback": true, "direct": .bool(disk.cache == .none), "no-flush": false],
          ],
        ]
      })
  }

  /// Bus 0 and its functions, in QEMU's `PciInfo` shape.
  var pci: JSONValue { PCIReport.qmp(machine.machine.pciFunctions) }

  var chardevs: JSONValue {
    .array(
      [["label": "serial0", "filename": .string(serialBackend), "frontend-open": true]]
        + monitorAddresses.enumerated().map { index, address in
          ["label": .string("monitor\(index)"), "filename": .string(address.description), "frontend-open": true]
        })
  }
}
