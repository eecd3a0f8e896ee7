/// Whether a snapshot saved from one configuration can be restored into another: the same
/// RAM, vCPUs and devices (disks by path, format and mode; console; entropy; debug exit).
/// The boot source and the name may differ — the kernel is already in the saved RAM.
enum SnapshotCompatibility {
  /// Throws one error listing every difference, each with the saved value and the one asked for.
  static func check(saved: VirtualMachineConfiguration, requested: VirtualMachineConfiguration, path: String)
    throws(VirtualMachineError)
  {
    var differences: [String] = []
    if saved.memorySize != requested.memorySize {
      differences.append(
        "--memory: the snapshot has \(saved.memorySize >> 20) MiB, this run asks for \(requested.memorySize >> 20) MiB")
    }
    if saved.cpuCount != requested.cpuCount {
      differences.append("--cpus: the snapshot has \(saved.cpuCount), this run asks for \(requested.cpuCount)")
    }
    if saved.disks.map(\.path) != requested.disks.map(\.path) {
      let before = saved.disks.map(\.path).joined(separator: ", ")
      let now = requested.disks.map(\.path).joined(separator: ", ")
      differences.append("--disk: the snapshot has [\(before)], this run asks for [\(now)]")
    } else {
      for (old, new) in zip(saved.disks, requested.disks) where old.readOnly != new.readOnly {
        differences.append("--disk \(new.path): readonly=\(old.readOnly ? "on" : "off") in the snapshot")
      }
    }
    if saved.consoleDevice != requested.consoleDevice {
      differences.append("--console: the snapshot has \(saved.consoleDevice.rawValue)")
    }
    if saved.entropy != requested.entropy {
      differences.append("--rng: the snapshot was saved \(saved.entropy ? "with" : "without") it")
    }
    if saved.networks.count != requested.networks.count {
      differences.append(
        "--net: the snapshot has \(saved.networks.count) NIC(s), this run asks for \(requested.networks.count)")
    }
    if saved.debugExitPort != requested.debugExitPort {
      differences.append("--debug-exit-port: the snapshot has \(saved.debugExitPort.map { String($0) } ?? "none")")
    }
    guard differences.isEmpty else {
      throw .snapshot("\(path) was saved from another machine: " + differences.joined(separator: "; "))
    }
  }
}
