import CSlirp
import Glibc
import Synchronization

/// User-mode networking through libslirp (the library QEMU and podman use): the guest sits
/// on 10.0.2.0/24 behind a NAT, with DHCP (10.0.2.15 onwards), a DNS forwarder at 10.0.2.3,
/// the host reachable as 10.0.2.2 (its loopback included) and IPv6 on fec0::/64, and
/// `hostfwd` forwards inbound. No privileges needed. libslirp is loaded only when used.
///
/// libslirp is single-threaded: every call into it happens under one lock, from the pump
/// (polling its sockets, timers) or the NIC's transmit thread (frames from the guest).
public final class UserNetwork: NetworkBackend, @unchecked Sendable {
  public let description = "user"
  public let headerLength = 0
  public let offloadFeatures: UInt64 = 0
  /// The address DHCP gives the guest first.
  public static let guestAddress = "10.0.2.15"
  /// The host as the guest sees it.
  public static let hostAddress = "10.0.2.2"
  /// Frames kept for a guest with no receive buffers (beyond that they are dropped; TCP resends).
  static let heldLimit = 256

  private let lock = Mutex<Void>(())
  /// Guarded by `lock`, as is every libslirp call.
  private var slirp: OpaquePointer?
  private var held: [[UInt8]] = []
  private var timers: [Timer] = []
  private var pollContext: [pollfd] = []
  private var pollBase = 0
  private var deliver: @Sendable (UnsafeRawBufferPointer) -> Bool = { _ in true }
  private var wake: @Sendable () -> Void = {}
  /// Frames libslirp sent while the guest's queue was full and the held frames were at their limit.
  public let droppedFrames = Atomic<Int>(0)
  private var transmitBuffer = [UInt8](repeating: 0, count: 65_536 + 64)
  /// Frames went to libslirp since the pump was last woken for them.
  private var sentSinceWake = false

  /// A timer libslirp asked for (expiry in milliseconds on the monotonic clock, or nil).
  final class Timer {
    let id: SlirpTimerId
    let callback: SlirpTimerCb?
    let callbackOpaque: UnsafeMutableRawPointer?
    var expiry: Int64?
    init(id: SlirpTimerId, callback: SlirpTimerCb?, callbackOpaque: UnsafeMutableRawPointer?) {
      self.id = id
      self.callback = callback
      self.callbackOpaque = callbackOpaque
    }
  }

  /// Loads libslirp, creates its stack and sets up each forward. Errors name a missing library
  /// or a forward whose host port cannot be bound.
  ///
  /// SIGPIPE is ignored from then on, process-wide (as QEMU does): libslirp writes to host
  /// sockets without MSG_NOSIGNAL, and a host peer that closes its end (any TCP server the
  /// guest talks to) would otherwise kill the whole process.
  public init(forwards: [PortForward] = []) throws(NetworkError) {
    signal(SIGPIPE, SIG_IGN)
    if let failure = cslirp_load() {
      throw NetworkError(
        "user networking needs libslirp (\(String(cString: failure))): install it (apt-get install libslirp0) or use --net none"
      )
    }
    var config = SlirpConfig()
    config.version = 4
    config.in_enabled = true
    config.vnetwork = Self.address("10.0.2.0")
    config.vnetmask = Self.address("255.255.255.0")
    config.vhost = Self.address(Self.hostAddress)
    config.vdhcp_start = Self.address(Self.guestAddress)
    config.vnameserver = Self.address("10.0.2.3")
    config.in6_enabled = true
    config.vprefix_addr6 = Self.address6("fec0::")
    config.vprefix_len = 64
    config.vhost6 = Self.address6("fec0::2")
    config.vnameserver6 = Self.address6("fec0::3")
    config.if_mtu = 1500
    config.if_mru = 1500
    let opaque = Unmanaged.passUnretained(self).toOpaque()
    slirp = withUnsafePointer(to: &config) { config in cslirp_new(config, Self.callbacks, opaque) }
    guard slirp != nil else { throw NetworkError("libslirp could not set up the user network") }
    for forward in forwards {
      guard let host = Self.parseIPv4(forward.hostAddress), let guest = Self.parseIPv4(forward.guestAddress) else {
        close()
        throw NetworkError("hostfwd=\(forward): not an IPv4 address")
      }
      let result = cslirp_add_hostfwd(
        slirp, forward.transport == .udp ? 1 : 0, host, Int32(forward.hostPort), guest, Int32(forward.guestPort))
      if result < 0 {
        close()
        throw NetworkError(
          "hostfwd=\(forward): cannot listen on \(forward.hostAddress):\(forward.hostPort) (is the port in use, or the address not this host's?)"
        )
      }
    }
  }

  /// The libslirp version string.
  public static var libraryVersion: String? {
    guard cslirp_load() == nil, let text = cslirp_version_string() else { return nil }
    return String(cString: text)
  }

  static func address(_ text: String) -> in_addr { parseIPv4(text) ?? in_addr(s_addr: 0) }

  /// A dotted IPv4 address, or nil.
  public static func parseIPv4(_ text: String) -> in_addr? {
    var result = in_addr()
    return inet_pton(AF_INET, text, &result) == 1 ? result : nil
  }

  static func address6(_ text: String) -> in6_addr {
    var result = in6_addr()
    _ = inet_pton(AF_INET6, text, &result)
    return result
  }

  public func setNegotiatedFeatures(_ features: UInt64) {}

  public func attach(
    deliver: @escaping @Sendable (UnsafeRawBufferPointer) -> Bool, wake: @escaping @Sendable () -> Void
  ) {
    lock.withLock { _ in
      self.deliver = deliver
      self.wake = wake
    }
  }

  public func send(_ parts: UnsafeBufferPointer<iovec>) -> Bool {
    lock.withLock { _ in
      guard let slirp else { return false }
      var length = 0
      for part in parts {
        guard length + part.iov_len <= transmitBuffer.count, let base = part.iov_base else { return false }
        transmitBuffer.withUnsafeMutableBytes { buffer in
          (buffer.baseAddress! + length).copyMemory(from: base, byteCount: part.iov_len)
        }
        length += part.iov_len
      }
      transmitBuffer.withUnsafeBufferPointer { cslirp_input(slirp, $0.baseAddress, Int32(length)) }
      // TCP segments wake the pump once per burst (finishSending); anything else (a ping, DNS,
      // DHCP, ARP) may have an answer waiting already: at once.
      if Self.isTCP(transmitBuffer, length: length) { sentSinceWake = true } else { wake() }
      return true
    }
  }

  /// Whether an Ethernet frame carries TCP (over IPv4 or IPv6, no extension headers).
  static func isTCP(_ frame: [UInt8], length: Int) -> Bool {
    guard length >= 14 + 40 else { return false }
    switch (frame[12], frame[13]) {
    case (0x08, 0x00): return frame[14 + 9] == 6
    case (0x86, 0xDD): return frame[14 + 6] == 6
    default: return false
    }
  }

  /// The frames may have opened sockets, or left data for them, that libslirp now wants
  /// polled: the pump looks again, once per burst (a wake per frame costs a thread switch each).
  public func finishSending() {
    let wake = lock.withLock { _ -> (@Sendable () -> Void)? in
      defer { sentSinceWake = false }
      return sentSinceWake ? self.wake : nil
    }
    wake?()
  }

  public func preparePoll(_ descriptors: inout [pollfd]) -> Int32 {
    lock.withLock { _ in
      guard let slirp else { return -1 }
      var timeout = UInt32.max
      pollContext = descriptors
      pollBase = descriptors.count
      cslirp_pollfds_fill(slirp, &timeout, Self.addPoll, Unmanaged.passUnretained(self).toOpaque())
      descriptors = pollContext
      pollContext = []
      let now = Self.milliseconds()
      for timer in timers {
        if let expiry = timer.expiry { timeout = min(timeout, UInt32(clamping: max(0, expiry - now))) }
      }
      return timeout == .max ? -1 : Int32(clamping: timeout)
    }
  }

  public func service(_ descriptors: ArraySlice<pollfd>) {
    lock.withLock { _ in
      guard let slirp else { return }
      while let frame = held.first {
        guard frame.withUnsafeBytes({ deliver($0) }) else { break }
        held.removeFirst()
      }
      pollContext = Array(descriptors)
      cslirp_pollfds_poll(slirp, 0, Self.getEvents, Unmanaged.passUnretained(self).toOpaque())
      pollContext = []
      let now = Self.milliseconds()
      for timer in timers {
        guard let expiry = timer.expiry, expiry <= now else { continue }
        timer.expiry = nil
        if let callback = timer.callback {
          callback(timer.callbackOpaque)
        } else {
          cslirp_handle_timer(slirp, timer.id, timer.callbackOpaque)
        }
      }
    }
  }

  public func close() {
    lock.withLock { _ in
      if let slirp { cslirp_cleanup(slirp) }
      slirp = nil
      held = []
    }
  }

  deinit { close() }

  // MARK: libslirp's callbacks (called with `lock` held, from inside a libslirp call)

  private static func backend(_ opaque: UnsafeMutableRawPointer?) -> UserNetwork? {
    guard let opaque else { return nil }
    return Unmanaged<UserNetwork>.fromOpaque(opaque).takeUnretainedValue()
  }

  /// A frame for the guest.
  private func received(_ frame: UnsafeRawBufferPointer) {
    if held.isEmpty, deliver(frame) { return }
    if held.count < Self.heldLimit {
      held.append(Array(frame))
    } else {
      droppedFrames.add(1, ordering: .relaxed)
    }
  }

  static func milliseconds() -> Int64 {
    var now = timespec()
    clock_gettime(CLOCK_MONOTONIC, &now)
    return Int64(now.tv_sec) * 1000 + Int64(now.tv_nsec) / 1_000_000
  }

  private static let addPoll: SlirpAddPollCb = { fd, events, opaque in
    guard let backend = backend(opaque) else { return -1 }
    var mask: Int16 = 0
    if events & Int32(SLIRP_POLL_IN) != 0 { mask |= Int16(POLLIN) }
    if events & Int32(SLIRP_POLL_OUT) != 0 { mask |= Int16(POLLOUT) }
    if events & Int32(SLIRP_POLL_PRI) != 0 { mask |= Int16(POLLPRI) }
    backend.pollContext.append(pollfd(fd: fd, events: mask, revents: 0))
    return Int32(backend.pollContext.count - 1 - backend.pollBase)
  }

  private static let getEvents: SlirpGetREventsCb = { index, opaque in
    guard let backend = backend(opaque), backend.pollContext.indices.contains(Int(index)) else { return 0 }
    let revents = backend.pollContext[Int(index)].revents
    var result: Int32 = 0
    if revents & Int16(POLLIN) != 0 { result |= Int32(SLIRP_POLL_IN) }
    if revents & Int16(POLLOUT) != 0 { result |= Int32(SLIRP_POLL_OUT) }
    if revents & Int16(POLLPRI) != 0 { result |= Int32(SLIRP_POLL_PRI) }
    if revents & Int16(POLLERR | POLLNVAL) != 0 { result |= Int32(SLIRP_POLL_ERR) }
    if revents & Int16(POLLHUP) != 0 { result |= Int32(SLIRP_POLL_HUP) }
    return result
  }

  /// libslirp keeps the pointer it is given: one table for the life of the process.
  private nonisolated(unsafe) static let callbacks: UnsafeMutablePointer<SlirpCb> = {
    let table = UnsafeMutablePointer<SlirpCb>.allocate(capacity: 1)
    var callbacks = SlirpCb()
    callbacks.send_packet = { buffer, length, opaque in
      guard let backend = backend(opaque), let buffer else { return -1 }
      backend.received(UnsafeRawBufferPointer(start: buffer, count: length))
      return length
    }
    callbacks.guest_error = { _, _ in }
    callbacks.clock_get_ns = { _ in
      var now = timespec()
      clock_gettime(CLOCK_MONOTONIC, &now)
      return Int64(now.tv_sec) * 1_000_000_000 + Int64(now.tv_nsec)
    }
    callbacks.timer_new = { callback, callbackOpaque, opaque in
      guard let backend = backend(opaque) else { return nil }
      let timer = Timer(id: SLIRP_TIMER_RA, callback: callback, callbackOpaque: callbackOpaque)
      backend.timers.append(timer)
      return Unmanaged.passUnretained(timer).toOpaque()
    }
    callbacks.timer_new_opaque = { id, callbackOpaque, opaque in
      guard let backend = backend(opaque) else { return nil }
      let timer = Timer(id: id, callback: nil, callbackOpaque: callbackOpaque)
      backend.timers.append(timer)
      return Unmanaged.passUnretained(timer).toOpaque()
    }
    callbacks.timer_free = { timer, opaque in
      guard let backend = backend(opaque), let timer else { return }
      backend.timers.removeAll { Unmanaged.passUnretained($0).toOpaque() == timer }
    }
    callbacks.timer_mod = { timer, expiry, opaque in
      guard let backend = backend(opaque), let timer else { return }
      backend.timers.first { Unmanaged.passUnretained($0).toOpaque() == timer }?.expiry = expiry
    }
    // A new socket (an outbound connection, a ping, a UDP flow): the pump polls it at once,
    // not at the end of the transmit burst (a ping's reply may already be waiting).
    callbacks.register_poll_fd = { _, opaque in backend(opaque)?.wake() }
    callbacks.unregister_poll_fd = { _, _ in }
    callbacks.notify = { opaque in backend(opaque)?.wake() }
    table.initialize(to: callbacks)
    return table
  }()
}
