import Devices
import DiskImage
import GuestMemory
import Synchronization

/// virtio-scsi (device type 8) with one target and one logical unit: a read-only CD-ROM drive
/// (`SCSICDROM`) holding an image (an ISO). Queues: control (task management answered at once:
/// every command completes before its kick returns), event (buffers kept, no events: nothing
/// is hot-plugged) and one request queue. Every request is untrusted: a malformed one gets a
/// failure in its response, or breaks the queue (NEEDS_RESET) if it cannot carry one.
public final class VirtioSCSI: VirtioDevice, @unchecked Sendable {
  public let deviceType: UInt16 = 8
  public let deviceFeatures: UInt64 = 0
  public let queueSizes: [UInt16] = [128, 128, 128]
  public let backend: any BlockBackend
  public let unit: SCSICDROM
  private let memory: GuestMemory
  private let queues = Mutex<[SplitVirtqueue]>([])
  /// Sense and CDB sizes, as the driver may set them (reset restores the defaults).
  private let sizes = Mutex<VirtioSCSIState>(VirtioSCSIState())
  /// Commands served, blocks read and failures, for `--stats`.
  public let statistics = Mutex(Statistics())
  private let interruptLine = QueueInterruptLine()

  /// Per-device counters.
  public struct Statistics: Sendable, Equatable {
    public var commands = 0
    public var bytesRead = 0
    public var failures = 0
  }

  /// Queue indices.
  enum Queue {
    static let control = 0
    static let event = 1
    static let request = 2
  }

  /// Response codes (virtio 1.2 §5.6.6.1).
  enum Response {
    static let ok: UInt8 = 0
    static let overrun: UInt8 = 1
    static let badTarget: UInt8 = 3
    static let failure: UInt8 = 9
  }

  /// SCSI status codes.
  enum Status {
    static let good: UInt8 = 0
    static let checkCondition: UInt8 = 2
  }

  /// A request's fixed part before the CDB: LUN (8), tag (8), task attribute, priority, CRN.
  static let requestHeaderSize = 19
  /// A response's fixed part before the sense data.
  static let responseHeaderSize = 12

  public init(backend: any BlockBackend, memory: GuestMemory, serial: String = "skvm-cd0") {
    self.backend = backend
    self.memory = memory
    unit = SCSICDROM(mediumSize: backend.size, serial: serial)
  }

  private func interrupt(_ queue: Int) { interruptLine.raise(queue) }

  /// num_queues, seg_max, max_sectors, cmd_per_lun, event_info_size, sense_size, cdb_size,
  /// max_channel, max_target, max_lun: one request queue, target 0, LUN 0.
  public func readConfig(_ offset: Int, width: Int) -> UInt64 {
    let current = sizes.withLock { $0 }
    var config = [UInt8](repeating: 0, count: 36)
    func put(_ value: UInt32, _ at: Int) {
      withUnsafeBytes(of: value.littleEndian) { config.replaceSubrange(at..<at + 4, with: $0) }
    }
    put(1, 0)  // num_queues (request queues)
    put(126, 4)  // seg_max
    put(0xFFFF, 8)  // max_sectors
    put(128, 12)  // cmd_per_lun
    put(16, 16)  // event_info_size
    put(current.senseSize, 20)
    put(current.cdbSize, 24)
    guard offset >= 0, width > 0, offset + width <= config.count else { return 0 }
    return (0..<width).reduce(0) { $0 | UInt64(config[offset + $1]) << (8 * UInt64($1)) }
  }

  /// The driver may set sense_size and cdb_size (whole 32-bit writes, within the limits).
  public func writeConfig(_ offset: Int, width: Int, value: UInt64) {
    guard width == 4 else { return }
    let value = UInt32(truncatingIfNeeded: value)
    sizes.withLock { sizes in
      switch offset {
      case 20 where value <= VirtioSCSIState.maximumSenseSize: sizes.senseSize = value
      case 24 where value <= VirtioSCSIState.maximumCDBSize: sizes.cdbSize = value
      default: break
      }
    }
  }

  public func activate(queues: [SplitVirtqueue], features: UInt64, interrupt: @escaping @Sendable (Int) -> Void) {
    interruptLine.connect(interrupt)
    self.queues.withLock { $0 = queues }
  }

  public var queuePositions: [SplitVirtqueue.Position] { queues.withLock { $0.map(\.position) } }

  public func reset() {
    queues.withLock { $0 = [] }
    sizes.withLock { $0 = VirtioSCSIState() }
    interruptLine.disconnect()
  }

  public var deviceState: VirtioDeviceState? { .scsi(sizes.withLock { $0 }) }

  public func restore(deviceState: VirtioDeviceState) throws(DeviceStateError) {
    guard case .scsi(let saved) = deviceState else {
      throw DeviceStateError("saved device state of another kind of virtio device for virtio-scsi")
    }
    guard saved.senseSize <= VirtioSCSIState.maximumSenseSize, saved.cdbSize <= VirtioSCSIState.maximumCDBSize else {
      throw DeviceStateError(
        "virtio-scsi sense size \(saved.senseSize) or CDB size \(saved.cdbSize) is beyond this device's limits")
    }
    sizes.withLock { $0 = saved }
  }

  @discardableResult
  public func notify(queue index: Int, onIOThread: Bool) -> Bool {
    // The event queue's buffers wait for events that never come; they are left in place.
    guard index != Queue.event else { return true }
    let (notify, broken) = VirtqueueService.drain(queues, index: index, memory: memory) { chain in
      index == Queue.control ? serveControl(chain) : serveCommand(chain)
    }
    if notify { interrupt(index) }
    return !broken
  }

  /// Task management and asynchronous notification requests: nothing is ever outstanding to
  /// abort or reset (commands complete within their kick), and no event is offered.
  private func serveControl(_ chain: DescriptorChain) -> UInt32 {
    let request = GuestScatterList(chain.readable, memory: memory)
    let reply = GuestScatterList(chain.writable, memory: memory)
    guard let type = request.bytes(at: 0, count: 4) else { return 0 }
    switch UInt32(type[0]) | UInt32(type[1]) << 8 | UInt32(type[2]) << 16 | UInt32(type[3]) << 24 {
    case 0:  // task management: response (1 byte), FUNCTION COMPLETE
      return reply.write([Response.ok], at: 0) ? 1 : 0
    case 1, 2:  // asynchronous notification query or subscribe: event_actual (4) none, response
      return reply.write([0, 0, 0, 0, Response.ok], at: 0) ? 5 : 0
    default:
      return reply.write([Response.failure], at: 0) ? 1 : 0
    }
  }

  /// One SCSI command: its response header, sense on CHECK CONDITION, and its data in.
  private func serveCommand(_ chain: DescriptorChain) -> UInt32 {
    let current = sizes.withLock { $0 }
    let request = GuestScatterList(chain.readable, memory: memory)
    let reply = GuestScatterList(chain.writable, memory: memory)
    let responseSize = Self.responseHeaderSize + Int(current.senseSize)
    guard reply.length >= responseSize,
      let header = request.bytes(at: 0, count: Self.requestHeaderSize + Int(current.cdbSize))
    else {
      statistics.withLock { $0.failures += 1 }
      // Too short to answer in full: a failure in the response byte if even that fits.
      return reply.length >= Self.responseHeaderSize && reply.write([0, Response.failure], at: 10) ? 12 : 0
    }
    let dataInCapacity = reply.length - responseSize
    func respond(status: UInt8, response: UInt8, sense: [UInt8] = [], residual: Int) -> UInt32 {
      let sense = Array(sense.prefix(Int(current.senseSize)))
      var bytes = Self.le32(UInt32(sense.count)) + Self.le32(UInt32(clamping: residual)) + [0, 0, status, response]
      bytes += sense
      _ = reply.write(bytes, at: 0)
      return UInt32(clamping: responseSize + (dataInCapacity - residual))
    }
    // Target 0, LUN 0 only (single-level LUN structure: byte 0 is 1, byte 1 the target).
    guard header[0] == 1, header[1] == 0 else {
      return respond(status: Status.good, response: Response.badTarget, residual: dataInCapacity)
    }
    let lun = (Int(header[2]) & 0x3F) << 8 | Int(header[3])
    let cdb = Array(header[Self.requestHeaderSize...])
    statistics.withLock { $0.commands += 1 }
    let outcome: SCSICDROM.Outcome
    if lun == 0 {
      outcome = unit.execute(cdb)
    } else if cdb.first == SCSICDROM.Operation.inquiry {
      outcome = .data([0x7F, 0, 0x05, 0x02, 0])  // no logical unit here
    } else {
      outcome = .checkCondition(.noSuchUnit)
    }
    switch outcome {
    case .data(let bytes):
      let count = min(bytes.count, dataInCapacity)
      _ = reply.write(Array(bytes.prefix(count)), at: responseSize)
      return respond(
        status: Status.good, response: count < bytes.count ? Response.overrun : Response.ok,
        residual: dataInCapacity - count)
    case .read(let offset, let length):
      let count = min(length, dataInCapacity)
      guard reply.read(from: backend, offset: offset, count: count, at: responseSize) else {
        statistics.withLock { $0.failures += 1 }
        return respond(
          status: Status.checkCondition, response: Response.ok, sense: SCSISense.readError.fixedFormat,
          residual: dataInCapacity)
      }
      statistics.withLock { $0.bytesRead += count }
      return respond(
        status: Status.good, response: count < length ? Response.overrun : Response.ok,
        residual: dataInCapacity - count)
    case .checkCondition(let sense):
      statistics.withLock { $0.failures += 1 }
      return respond(
        status: Status.checkCondition, response: Response.ok, sense: sense.fixedFormat, residual: dataInCapacity)
    }
  }

  static func le32(_ value: UInt32) -> [UInt8] {
    [UInt8(value & 0xFF), UInt8(value >> 8 & 0xFF), UInt8(value >> 16 & 0xFF), UInt8(value >> 24)]
  }
}

/// What virtio-scsi keeps beyond its rings: the sense and CDB sizes the driver set.
public struct VirtioSCSIState: Sendable, Codable, Equatable {
  public var senseSize: UInt32 = 96
  public var cdbSize: UInt32 = 32
  static let maximumSenseSize: UInt32 = 252
  static let maximumCDBSize: UInt32 = 256
  public init() {}
}
