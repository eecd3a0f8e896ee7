extension PCIDevices {
  /// The vhost-net devices that cannot log their writes to guest memory (the kernel lacks
  /// VHOST_F_LOG_ALL), by NIC index: such a machine cannot migrate live.
  var vhostsWithoutLog: [Int] {
    vhostPlanes.filter { !$0.plane.canLogWrites }.map(\.nic)
  }

  /// Makes every vhost-net device log its writes to guest memory in a fresh log (a live
  /// migration starts), or stops them (false). Fails if the kernel refuses one.
  func logVhostWrites(_ on: Bool) throws(VirtualMachineError) {
    guard !vhostPlanes.isEmpty else { return }
    let log = on ? try VhostDirtyLog(memory: memory) : nil
    if on { vhostLog = log }
    let refused = vhostPlanes.filter { !$0.plane.setDirtyLog(log) }.map(\.nic)
    if let nic = refused.first, on {
      throw .migration("vhost-net of NIC net\(nic) refused to log its writes to guest memory")
    }
    // The kernel may write the old log until it has let go of it.
    if !on && refused.isEmpty { vhostLog = nil }
  }

  /// The pages vhost-net wrote since the last call (none when it does not log).
  func takeVhostDirtyPages() -> [UInt64] { vhostLog?.take() ?? [] }
}
