import CSystemCalls
import DiskImage
import Glibc
import GuestMemory

#if canImport(FoundationEssentials)
  import FoundationEssentials
#else
  import Foundation
#endif

/// The destination of a live migration (`skvm run --incoming tcp:HOST:PORT`): listens, takes
/// one connection, and receives the machine into a memfd laid out as a snapshot file — RAM
/// pass after pass, then the vCPUs' and devices' state — which the usual restore then maps.
/// The source hears `running` only once the machine is built and restored here. It lets go of
/// its disks once the guest is stopped and says so (`disks released`); this side opens and
/// locks them only then — while the source still reads and sends the machine's state.
///
/// Everything in the stream is untrusted: the hello is checked (format, configuration, RAM map,
/// that each disk exists here) before any RAM is accepted, every page's address must lie in
/// that map, every length has a limit.
public final class IncomingMigration: @unchecked Sendable {
  private let listener: Int32
  /// Where it listens (the port the kernel picked when 0 was asked for).
  public let listening: MigrationAddress
  /// The same as `HOST:PORT`.
  public var address: String { listening.description }
  private var channel: MigrationChannel?
  /// Whether the guest ran on the source when it stopped for the switch-over (known once
  /// `receive()` returned): the destination runs it, or keeps it paused as it was (`cont` runs it).
  public private(set) var sourceWasRunning = true
  /// The KVM side of the incoming machine, built while its RAM arrives.
  private let early = EarlyMachineCore()
  /// The disks, opened once the source released them (known once `receive()` returned).
  private var openedDisks: [OpenedDisk]?
  /// Called once the source has connected (the destination's status becomes active).
  var onConnected: (@Sendable () -> Void)?
  private let abortLock = ConditionLock()
  private var aborted = false

  /// How much of a run of pages is received at a time.
  static let receiveChunk = 256 << 10

  /// The longest a source may be silent mid-stream.
  static let silenceSeconds = 60

  /// Listens on `address` (one connection); the error names the address.
  public init(address listening: MigrationAddress) throws(VirtualMachineError) {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
    guard fd >= 0 else { throw .migration("cannot make a socket: \(String(cString: strerror(errno)))") }
    var one: Int32 = 1
    _ = setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
    let bound = listening.withSocketAddress { bind(fd, $0, $1) == 0 && listen(fd, 1) == 0 }
    guard bound else {
      let text = String(cString: strerror(errno))
      close(fd)
      throw .migration("cannot listen on \(listening) for the incoming migration: \(text)")
    }
    var local = sockaddr_in()
    var length = socklen_t(MemoryLayout<sockaddr_in>.size)
    let named = withUnsafeMutablePointer(to: &local) {
      $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
    }
    self.listening = named == 0 ? listening.with(port: Int(UInt16(bigEndian: local.sin_port))) : listening
    listener = fd
  }

  deinit { close(listener) }

  /// Waits for the source, then receives the whole machine; returns it as a snapshot to
  /// restore. A stream that breaks the rules fails with what was wrong (and the source hears it).
  public func receive() throws(VirtualMachineError) -> SnapshotFile {
    var peerAddress = sockaddr_in()
    var length = socklen_t(MemoryLayout<sockaddr_in>.size)
    let fd = withUnsafeMutablePointer(to: &peerAddress) {
      $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { accept(listener, $0, &length) }
    }
    guard fd >= 0 else {
      if abortLock.withLock({ aborted }) { throw .migration("the incoming migration on \(address) was given up") }
      throw .migration("accepting the migration on \(address) failed: \(String(cString: strerror(errno)))")
    }
    _ = fcntl(fd, F_SETFD, FD_CLOEXEC)
    // Nobody else is let in: the one source is served, later connections are refused.
    _ = shutdown(listener, Int32(SHUT_RDWR))
    var text = [CChar](repeating: 0, count: 64)
    var ip = peerAddress.sin_addr
    inet_ntop(AF_INET, &ip, &text, 64)
    let host = String(decoding: text.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    let peer = "\(host):\(UInt16(bigEndian: peerAddress.sin_port))"
    let channel = MigrationChannel(fd: fd, peer: "the migration source \(peer)", timeoutSeconds: Self.silenceSeconds)
    let givenUp = abortLock.withLock { () -> Bool in
      self.channel = channel
      return aborted
    }
    if givenUp {
      channel.shutDown()
      throw .migration("the incoming migration on \(address) was given up")
    }
    onConnected?()
    do throws(MigrationChannel.Failure) {
      let received = try Self.receive(from: channel, early: early)
      sourceWasRunning = received.running
      openedDisks = received.disks
      return received.snapshot
    } catch {
      refuse(error.description)
      throw .migration(error.description)
    }
  }

  /// Receives a whole stream from `fd`, a connected socket it then owns (the fuzzer feeds it
  /// this way): the machine as a snapshot, or what was wrong with the stream.
  public static func receive(fromSocket fd: Int32, peer: String) throws(VirtualMachineError) -> SnapshotFile {
    let channel = MigrationChannel(fd: fd, peer: peer, timeoutSeconds: 5)
    do throws(MigrationChannel.Failure) {
      let received = try receive(from: channel)
      for disk in received.disks ?? [] { disk.backend.close() }
      return received.snapshot
    } catch {
      throw .migration(error.description)
    }
  }

  /// Gives up (QMP `quit` while waiting): a waiting `receive()` returns with an error, a
  /// stream being received is cut.
  public func abort() {
    let open = abortLock.withLock { () -> MigrationChannel? in
      aborted = true
      return channel
    }
    _ = shutdown(listener, Int32(SHUT_RDWR))
    open?.shutDown()
  }

  /// The KVM side of the machine, built while RAM arrived, and the disks, opened when the
  /// source let go of them (each nil if it could not be): hand them to the restore, which uses
  /// each if it fits.
  public func takePreparedParts() -> IncomingMachineParts {
    defer { openedDisks = nil }
    return IncomingMachineParts(core: early.take(), disks: openedDisks)
  }

  /// Tells the source the machine runs here (it then stops for good).
  public func acknowledge() {
    try? takeChannel()?.send([MigrationKind.running.rawValue])
  }

  /// Tells the source why this side gave up (it then runs on).
  public func refuse(_ reason: String) {
    var message = MigrationMessage(.failed)
    message.putText(Array(reason.utf8.prefix(4000)))
    try? takeChannel()?.send(message.bytes)
  }

  private func takeChannel() -> MigrationChannel? {
    abortLock.withLock { () -> MigrationChannel? in
      defer { channel = nil }
      return channel
    }
  }

  private static func receive(from channel: MigrationChannel, early: EarlyMachineCore? = nil) throws(MigrationChannel
    .Failure) -> (
      snapshot: SnapshotFile, running: Bool, disks: [OpenedDisk]?
    )
  {
    // The hello: magic, version, configuration, RAM map.
    let magic = try channel.receive(8, limit: 8, what: "a greeting")
    guard magic == MigrationKind.magic else {
      throw MigrationChannel.Failure("\(channel.peer) is not an skvm migration source (no SKVMMIGR greeting)")
    }
    let version = try channel.receive32()
    guard version == MigrationKind.formatVersion else {
      throw MigrationChannel.Failure(
        "\(channel.peer) speaks migration format \(version); this skvm speaks \(MigrationKind.formatVersion)")
    }
    let configurationJSON = try channel.receive(Int(try channel.receive32()), limit: 1 << 20, what: "a configuration")
    let configuration: VirtualMachineConfiguration
    do {
      configuration = try JSONDecoder().decode(VirtualMachineConfiguration.self, from: Data(configurationJSON))
    } catch {
      throw MigrationChannel.Failure("the source's configuration cannot be read: \(MachineState.describe(error))")
    }
    let count = Int(try channel.receive32())
    guard (1...SnapshotFile.maximumRegions).contains(count) else {
      throw MigrationChannel.Failure("the source announced \(count) RAM regions")
    }
    var ranges: [(UInt64, UInt64)] = []
    for _ in 0..<count { ranges.append((try channel.receive64(), try channel.receive64())) }
    let map = try RAMMap(ranges)
    // Shared storage: every disk must be here, at the same path, the same image (format and
    // virtual size as the source has it), before any RAM comes.
    for disk in configuration.disks {
      let format = String(
        decoding: try channel.receive(Int(try channel.receive32()), limit: 16, what: "a disk format"), as: UTF8.self)
      let size = try channel.receive64()
      guard access(disk.path, disk.readOnly ? R_OK : R_OK | W_OK) == 0 else {
        throw MigrationChannel.Failure(
          "disk \(disk.path) is not here (\(String(cString: strerror(errno)))): a migration needs the same images at the same paths on both hosts"
        )
      }
      let here = try? ImageInfo.read(disk.path, format: disk.format, forceShare: true)
      guard let here, here.format.rawValue == format, here.virtualSize == size else {
        throw MigrationChannel.Failure(
          "disk \(disk.path) here is \(here.map { "a \($0.format.rawValue) image of \($0.virtualSize) bytes" } ?? "not a readable image"), on the source a \(format) image of \(size) bytes: a migration needs the same images (shared storage) at the same paths on both hosts"
        )
      }
    }
    // And every NIC's back end must open here (then it is closed until the machine is built):
    // on one host a single-queue tap the source holds, or a hostfwd port it has bound, cannot.
    do {
      let trial = try OpenedNetwork.openAll(configuration.networks, machineName: configuration.name)
      for network in trial { for backend in network.backends { backend.close() } }
    } catch {
      throw MigrationChannel.Failure(
        "\(error) — on one host the source still holds its NICs' back ends: use a multiqueue tap (ip tuntap add NAME mode tap multi_queue, queues=2) and no hostfwd, or migrate to another host"
      )
    }
    let memfd = csys_memfd_create("skvm-incoming")
    guard memfd >= 0 else {
      throw MigrationChannel.Failure("no memory for the incoming machine: \(String(cString: strerror(errno)))")
    }
    var owned = true
    defer { if owned { close(memfd) } }
    guard ftruncate(memfd, off_t(SnapshotFile.fixedRAMOffset + map.total)) == 0 else {
      throw MigrationChannel.Failure(
        "no memory for \(map.total >> 20) MiB of incoming RAM: \(String(cString: strerror(errno)))")
    }
    try channel.send([MigrationKind.accepted.rawValue])
    StartupTrace.shared.mark("migration accepted")
    early?.start(configuration: configuration, fd: memfd, ranges: map.ranges, offsets: map.offsets)
    // A run of pages arrives through a small buffer, a piece at a time: freeing a buffer of a
    // whole run (4 MiB) cost a few hundred microseconds of the guest's pause.
    let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: Self.receiveChunk, alignment: 4096)
    defer { buffer.deallocate() }
    let zeros = UnsafeMutableRawBufferPointer.allocate(byteCount: Int(GuestMemory.pageSize) * 16, alignment: 4096)
    zeros.initializeMemory(as: UInt8.self, repeating: 0)
    defer { zeros.deallocate() }
    // Built as soon as the state arrives (checked, its record decoded) — while the source is
    // still releasing its disks — so that `complete` finds it ready.
    var snapshot: SnapshotFile?
    // The disks, opened when the source says it let go of them; closed (their locks released)
    // if the stream fails after that.
    var disks: [OpenedDisk]?
    var handedOver = false
    defer { if !handedOver { for disk in disks ?? [] { disk.backend.close() } } }
    let punchHole: Int32 = 0x02 | 0x01  // FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE
    while true {
      let kind = try channel.receiveByte()
      switch MigrationKind(rawValue: kind) {
      case .pages, .zeros:
        let address = try channel.receive64()
        let pages = Int(try channel.receive32())
        guard (1...MigrationKind.maximumRun).contains(pages),
          let offset = map.fileOffset(of: address, length: UInt64(pages) * GuestMemory.pageSize)
        else {
          throw MigrationChannel.Failure(
            "\(channel.peer) sent \(pages) pages at 0x\(String(address, radix: 16)), outside the machine's RAM")
        }
        let length = pages * Int(GuestMemory.pageSize)
        if kind == MigrationKind.pages.rawValue {
          var done = 0
          while done < length {
            let piece = min(Self.receiveChunk, length - done)
            try channel.receive(into: UnsafeMutableRawBufferPointer(rebasing: buffer[0..<piece]))
            try Self.write(UnsafeRawBufferPointer(rebasing: buffer[0..<piece]), to: memfd, at: offset + UInt64(done))
            done += piece
          }
        } else if csys_fallocate(memfd, punchHole, off_t(offset), off_t(length)) != 0 {
          // Zero pages are holes: nothing to allocate where nothing was sent yet, and memory
          // given back where an earlier pass had sent data. Writing zeros is the fallback.
          var done = 0
          while done < length {
            let chunk = min(zeros.count, length - done)
            try Self.write(UnsafeRawBufferPointer(rebasing: zeros[0..<chunk]), to: memfd, at: offset + UInt64(done))
            done += chunk
          }
        }
      case .state:
        guard snapshot == nil else { throw MigrationChannel.Failure("\(channel.peer) sent the machine's state twice") }
        let recordLength = Int(try channel.receive32())
        let devicesLength = Int(try channel.receive32())
        guard recordLength + devicesLength <= SnapshotFile.maximumStateSize else {
          throw MigrationChannel.Failure("\(channel.peer) sent \(recordLength + devicesLength) bytes of state")
        }
        let record = try channel.receive(recordLength, limit: SnapshotFile.maximumStateSize, what: "a machine record")
        let devices = try channel.receive(devicesLength, limit: SnapshotFile.maximumStateSize, what: "device states")
        StartupTrace.shared.mark("migration state")
        let layout: SnapshotFile.Layout
        do {
          layout = try SnapshotFile.Layout(
            record: record, devices: devices, ranges: map.ranges, ramOffset: SnapshotFile.fixedRAMOffset)
        } catch {
          throw MigrationChannel.Failure("\(error)")
        }
        try Self.write(layout.header, to: memfd, at: 0)
        try Self.write(record, to: memfd, at: UInt64(SnapshotFile.headerSize))
        try Self.write(devices, to: memfd, at: layout.devicesOffset)
        owned = false  // the snapshot owns the memfd from here, whatever its check says
        do {
          snapshot = try SnapshotFile(fd: memfd, name: "the migration stream from \(channel.peer)")
        } catch {
          throw MigrationChannel.Failure("\(error)")
        }
        StartupTrace.shared.mark("migration snapshot")
      case .complete:
        StartupTrace.shared.mark("migration complete")
        guard let snapshot else {
          throw MigrationChannel.Failure("\(channel.peer) finished without sending the machine's state")
        }
        let running = try channel.receiveByte()
        guard running <= 1 else {
          throw MigrationChannel.Failure("\(channel.peer) sent run state \(running) (0 or 1 expected)")
        }
        handedOver = true
        return (snapshot, running == 1, disks)
      case .disksReleased:
        guard disks == nil, snapshot == nil else {
          throw MigrationChannel.Failure("\(channel.peer) released its disks twice, or after sending the state")
        }
        do {
          disks = try OpenedDisk.openAll(configuration.disks)
        } catch {
          throw MigrationChannel.Failure("the disks cannot be taken over from the source: \(error)")
        }
        StartupTrace.shared.mark("migration disks")
      case .drain:
        try channel.send([MigrationKind.drained.rawValue])
      case .cancel:
        throw MigrationChannel.Failure("\(channel.peer) cancelled the migration")
      default:
        throw MigrationChannel.Failure(
          "\(channel.peer) sent message kind 0x\(String(kind, radix: 16)): not a valid stream")
      }
    }
  }

  private static func write(_ bytes: [UInt8], to fd: Int32, at offset: UInt64) throws(MigrationChannel.Failure) {
    var failure: MigrationChannel.Failure?
    bytes.withUnsafeBytes { buffer in
      do throws(MigrationChannel.Failure) { try write(buffer, to: fd, at: offset) } catch { failure = error }
    }
    if let failure { throw failure }
  }

  private static func write(_ bytes: UnsafeRawBufferPointer, to fd: Int32, at offset: UInt64) throws(MigrationChannel
    .Failure)
  {
    var done = 0
    while done < bytes.count {
      let written = pwrite(fd, bytes.baseAddress! + done, bytes.count - done, off_t(offset) + off_t(done))
      if written < 0 && errno == EINTR { continue }
      guard written > 0 else {
        throw MigrationChannel.Failure("storing the incoming machine failed: \(String(cString: strerror(errno)))")
      }
      done += written
    }
  }

  /// The source's RAM map, checked: page-aligned, in order, not overlapping, at most 1 TiB.
  struct RAMMap {
    let ranges: [(UInt64, UInt64)]
    let offsets: [UInt64]
    let total: UInt64

    init(_ ranges: [(UInt64, UInt64)]) throws(MigrationChannel.Failure) {
      var end: UInt64 = 0
      var offsets: [UInt64] = []
      var total: UInt64 = 0
      for (address, size) in ranges {
        guard size > 0, address % GuestMemory.pageSize == 0, size % GuestMemory.pageSize == 0, address >= end,
          address <= UInt64.max - size, size <= (1 << 40) - total
        else {
          throw MigrationChannel.Failure(
            "the source's RAM map is malformed (\(size) bytes at 0x\(String(address, radix: 16)))")
        }
        offsets.append(SnapshotFile.fixedRAMOffset + total)
        end = address + size
        total += size
      }
      self.ranges = ranges
      self.offsets = offsets
      self.total = total
    }

    /// Where `[address, address + length)` lies in the memfd, if it is all in one region.
    func fileOffset(of address: UInt64, length: UInt64) -> UInt64? {
      for (index, (start, size)) in ranges.enumerated() where address >= start && address - start < size {
        guard length <= size - (address - start) else { return nil }
        return offsets[index] + (address - start)
      }
      return nil
    }
  }
}
