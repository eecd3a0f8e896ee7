import Glibc
import GuestMemory
import KVM

/// How a live migration runs (QMP `migrate-set-parameters`, QEMU's names).
public struct MigrationParameters: Sendable, Equatable {
  /// The longest the guest may stay stopped for the last pass, in milliseconds (`downtime-limit`).
  public var downtimeLimitMilliseconds: UInt64 = 300
  /// Bytes per second at most; 0: as fast as the connection goes (`max-bandwidth`).
  public var maximumBandwidth: UInt64 = 0
  /// Passes over dirtied RAM before giving up on a guest that dirties faster than the link.
  public var maximumPasses = 30
  public init() {}
}

/// RAM figures of a live migration, as `query-migrate` shows them.
public struct MigrationRAMStatistics: Sendable, Equatable {
  /// Bytes sent so far (pages, markers and state).
  public var transferred: UInt64 = 0
  /// Bytes of RAM dirtied and not yet sent again.
  public var remaining: UInt64 = 0
  public var total: UInt64 = 0
  public var normalPages: UInt64 = 0
  /// Pages sent as zero markers (no data).
  public var zeroPages: UInt64 = 0
  /// Passes over dirty RAM so far (QEMU's `dirty-sync-count`).
  public var passes = 0
  /// Pages the guest dirtied per second during the last pass.
  public var dirtyPagesRate: UInt64 = 0
  /// The link's rate in the last pass, megabits per second.
  public var mbps: Double = 0
  /// What the last pass would cost the guest at that rate, in milliseconds.
  public var expectedDowntimeMilliseconds: Double = 0
  public init() {}
}

extension VirtualMachine {
  /// Why this machine cannot migrate live now, if it cannot.
  var liveMigrationObstacle: String? {
    guard let nic = pci?.vhostsWithoutLog.first else { return nil }
    return
      "NIC net\(nic) has its frames moved by vhost-net, and this host's vhost-net cannot log its writes to guest memory (no VHOST_F_LOG_ALL); start the machine with vhost=off to migrate it"
  }

  /// Starts recording every page written from now on: the guest's (KVM's dirty log), skvm's
  /// own (block reads, used rings, received frames) and vhost-net's (its received frames and
  /// used rings).
  func startDirtyLogging() throws(VirtualMachineError) {
    do {
      try memory.map(into: vm, logDirtyPages: true)
      _ = try memory.dirtyPages(in: vm)
    } catch {
      throw .migration("KVM cannot log dirty pages: \(error)")
    }
    memory.startLoggingWrites()
    do { try pci?.logVhostWrites(true) } catch {
      stopDirtyLogging()
      throw error
    }
  }

  /// Stops recording writes.
  func stopDirtyLogging() {
    try? pci?.logVhostWrites(false)
    memory.stopLoggingWrites()
    try? memory.map(into: vm, logDirtyPages: false)
  }

  /// Every page written since the last call, in address order, each once.
  func takeDirtyPages() throws(VirtualMachineError) -> [UInt64] {
    let guest: [UInt64]
    do { guest = try memory.dirtyPages(in: vm) } catch { throw .migration("KVM's dirty log cannot be read: \(error)") }
    return Array(Set(guest + memory.takeWrittenPages() + (pci?.takeVhostDirtyPages() ?? []))).sorted()
  }

  /// Every page of RAM, in address order.
  var allPages: [UInt64] {
    memory.regions.flatMap { region in
      stride(from: region.guestAddress, to: region.guestAddress + region.size, by: Int(GuestMemory.pageSize))
    }
  }

  /// Makes every disk's completed writes durable (errors show again at the next flush).
  func flushDisks() {
    for disk in pci?.disks ?? [] { try? disk.backend.flush() }
  }

  /// Flushes every disk and lets go of (or takes again) the images' locks; the paths whose
  /// lock could not be taken again.
  func setDiskLocks(_ locked: Bool) -> [String] {
    var failed: [String] = []
    for (disk, configured) in zip(pci?.disks ?? [], configuration.disks) {
      if !locked { try? disk.backend.flush() }
      if !disk.backend.setLocked(locked) { failed.append(configured.path) }
    }
    return failed
  }
}

/// Sends pages of a machine's RAM: contiguous runs straight from guest memory, all-zero
/// pages as markers, at most `maximumBandwidth` bytes a second.
struct MigrationPageSender {
  let memory: GuestMemory
  let channel: MigrationChannel
  let parameters: MigrationParameters
  let cancelled: () -> Bool
  var statistics: MigrationRAMStatistics
  private let started = monotonicNanoseconds()
  private var sentSinceStart: UInt64 = 0

  init(
    memory: GuestMemory, channel: MigrationChannel, parameters: MigrationParameters,
    statistics: MigrationRAMStatistics, cancelled: @escaping () -> Bool
  ) {
    self.memory = memory
    self.channel = channel
    self.parameters = parameters
    self.statistics = statistics
    self.cancelled = cancelled
  }

  /// Guest RAM known to be zero without reading it (sorted; see `GuestMemory.unwrittenRanges`).
  var unwritten: [(guestAddress: UInt64, size: UInt64)] = []

  /// Sends `pages` (sorted guest addresses).
  mutating func send(_ pages: [UInt64]) throws(VirtualMachineError) {
    var index = 0
    let pageSize = GuestMemory.pageSize
    while index < pages.count {
      if cancelled() { throw .migration("cancelled") }
      // A run: consecutive pages, all zero or all not, in one region.
      let first = pages[index]
      let zero = isZero(first)
      var count = 1
      while index + count < pages.count, count < MigrationKind.maximumRun,
        pages[index + count] == first + UInt64(count) * pageSize, isZero(pages[index + count]) == zero,
        (try? memory.buffer(at: first, length: (count + 1) * Int(pageSize))) != nil
      {
        count += 1
      }
      var header = MigrationMessage(zero ? .zeros : .pages)
      header.put64(first)
      header.put32(UInt32(count))
      do throws(MigrationChannel.Failure) {
        // Markers and short runs (a dirty page here and there) go out together.
        if zero {
          try channel.enqueue(header.bytes, then: UnsafeRawBufferPointer(start: nil, count: 0))
        } else {
          guard let data = try? memory.buffer(at: first, length: count * Int(pageSize)) else {
            throw MigrationChannel.Failure("page 0x\(String(first, radix: 16)) is not RAM")
          }
          try channel.enqueue(header.bytes, then: UnsafeRawBufferPointer(data))
        }
      } catch {
        throw .migration(error.description)
      }
      let bytes = UInt64(header.bytes.count) + (zero ? 0 : UInt64(count) * pageSize)
      statistics.transferred += bytes
      if zero { statistics.zeroPages += UInt64(count) } else { statistics.normalPages += UInt64(count) }
      throttle(bytes)
      index += count
    }
  }

  /// Sleeps as long as `max-bandwidth` says the bytes sent so far should have taken — in slices,
  /// so a cancel is seen within 20 ms (and the destination hears it, rather than a cut).
  private mutating func throttle(_ bytes: UInt64) {
    sentSinceStart += bytes
    guard parameters.maximumBandwidth > 0 else { return }
    let due = Double(sentSinceStart) / Double(parameters.maximumBandwidth) * 1e9
    while !cancelled() {
      let elapsed = Double(monotonicNanoseconds() &- started)
      guard due > elapsed else { return }
      usleep(UInt32(min((due - elapsed) / 1000, 20_000)))
    }
  }

  private func isZero(_ page: UInt64) -> Bool {
    if isUnwritten(page) { return true }
    guard let bytes = try? memory.buffer(at: page, length: Int(GuestMemory.pageSize)) else { return false }
    let words = bytes.bindMemory(to: UInt64.self)
    var accumulated: UInt64 = 0
    for word in words { accumulated |= word }
    return accumulated == 0
  }

  /// Whether `page` lies in an `unwritten` range (binary search).
  private func isUnwritten(_ page: UInt64) -> Bool {
    var low = 0
    var high = unwritten.count
    while low < high {
      let middle = (low + high) / 2
      let range = unwritten[middle]
      if page < range.guestAddress {
        high = middle
      } else if page - range.guestAddress >= range.size {
        low = middle + 1
      } else {
        return true
      }
    }
    return false
  }
}
