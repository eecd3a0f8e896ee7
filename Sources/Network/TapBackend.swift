import CSystemCalls
import Glibc
import Synchronization

/// A tap (or macvtap) device: frames go to and come from the host's network stack through
/// its file descriptor, each with a 12-byte virtio-net header so checksum and segmentation
/// offloads pass straight through (IFF_VNET_HDR, TUNSETVNETHDRSZ, TUNSETOFFLOAD).
public final class TapBackend: NetworkBackend, @unchecked Sendable {
  public let description: String
  /// The host interface name (for a macvtap, its character device's path).
  public let interfaceName: String
  public let headerLength = 12
  public let offloadFeatures = VirtioNetFeature.tapOffloads
  private let fd: Int32
  /// The tap's descriptor, for a kernel data path (vhost-net) to use in skvm's place.
  public var descriptor: Int32 { fd }
  private var deliver: @Sendable (UnsafeRawBufferPointer) -> Bool = { _ in true }
  /// Receive side, touched only on the pump thread: the frame being read and how much of it
  /// is held back because the guest had no room.
  private let frame = UnsafeMutableRawBufferPointer.allocate(byteCount: 12 + 65_536 + 64, alignment: 16)
  private var heldLength = 0
  /// The descriptor reported an error (the interface was deleted): it is polled no more.
  private var failed = false
  private let isClosed = Atomic<Bool>(false)
  /// Frames read per service call before the pump looks at its other descriptors again.
  static let frameBudget = 64

  private init(fd: Int32, description: String, interfaceName: String) {
    self.fd = fd
    self.description = description
    self.interfaceName = interfaceName
  }

  /// Attaches to the tap `name`, creating it when it does not exist (which needs
  /// CAP_NET_ADMIN), brings it up, and adds it to `bridge` if given. With `queues` above 1
  /// the tap is a multiqueue one (IFF_MULTI_QUEUE) and each back end returned is one of its
  /// queues.
  public static func open(name: String, bridge: String? = nil, queues: Int = 1) throws(NetworkError) -> [TapBackend] {
    guard name.utf8.count < 16, !name.contains("/"), !name.contains(" ") else {
      throw NetworkError("'\(name)' is not a valid interface name (at most 15 characters, no '/' or spaces)")
    }
    // Asked of the kernel, not sysfs: sysfs shows the namespace it was mounted in.
    if let bridge, csys_interface_index(bridge) == 0 {
      throw NetworkError(
        "there is no bridge named '\(bridge)': create it first (ip link add \(bridge) type bridge; ip link set \(bridge) up)"
      )
    }
    let existed = csys_interface_index(name) != 0
    var backends: [TapBackend] = []
    var interface = name
    for _ in 0..<max(1, queues) {
      do { backends.append(try openQueue(name: interface, existed: existed, multiqueue: queues > 1)) } catch {
        for backend in backends { backend.close() }
        throw error
      }
      interface = backends[0].interfaceName
    }
    func fail(_ error: NetworkError) -> NetworkError {
      for backend in backends { backend.close() }
      return error
    }
    if csys_interface_up(interface) != 0, !existed || bridge != nil {
      throw fail(
        NetworkError(
          "cannot bring tap '\(interface)' up: \(NetworkError.text(errno)) (this needs CAP_NET_ADMIN)"))
    }
    if let bridge, csys_bridge_add(bridge, interface) != 0 {
      let code = errno
      if code == EOPNOTSUPP || code == EINVAL {
        throw fail(
          NetworkError(
            "'\(bridge)' is not a bridge (\(NetworkError.text(code))): name a Linux bridge (ip link show type bridge)"))
      }
      throw fail(
        NetworkError(
          "cannot add tap '\(interface)' to bridge '\(bridge)': \(NetworkError.text(code)) (this needs CAP_NET_ADMIN)"))
    }
    return backends
  }

  /// Opens one queue of tap `name` (the whole tap when it is not a multiqueue one).
  private static func openQueue(name: String, existed: Bool, multiqueue: Bool) throws(NetworkError) -> TapBackend {
    var actual = [CChar](repeating: 0, count: 16)
    let fd = csys_tap_open(name, &actual, multiqueue ? 1 : 0)
    if fd < 0 {
      let code = errno
      switch code {
      case ENOENT, ENODEV:
        throw NetworkError("/dev/net/tun is missing (\(NetworkError.text(code))): load the tun module (modprobe tun)")
      case EPERM, EACCES:
        throw NetworkError(
          existed
            ? "tap '\(name)' exists but this user may not attach to it (\(NetworkError.text(code))): create it with 'ip tuntap add \(name) mode tap\(multiqueue ? " multi_queue" : "") user \(currentUser)' or run as root"
            : "cannot create tap '\(name)' (\(NetworkError.text(code))): creating a tap needs CAP_NET_ADMIN; create it first with 'ip tuntap add \(name) mode tap\(multiqueue ? " multi_queue" : "") user \(currentUser)' or run as root"
        )
      case EBUSY:
        throw NetworkError(
          multiqueue
            ? "tap '\(name)' cannot take another queue: it is busy, or already has all the queues it may have"
            : "tap '\(name)' is busy: another process has it open (close it, or pick another name)")
      case EINVAL:
        throw NetworkError(
          multiqueue
            ? "tap '\(name)' exists and is not a multiqueue tap (\(NetworkError.text(code))): create it with 'ip tuntap add \(name) mode tap multi_queue', or leave queues= out"
            : "'\(name)' exists and is not a single-queue tap without packet information (\(NetworkError.text(code))); a multiqueue tap needs queues=N"
        )
      default:
        throw NetworkError("cannot open tap '\(name)': \(NetworkError.text(code))")
      }
    }
    let interface = String(decoding: actual.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    let backend = TapBackend(fd: fd, description: interface, interfaceName: interface)
    try backend.setHeaderSize()
    return backend
  }

  /// Opens an existing macvtap's character device (`/dev/tapN`), once per queue.
  public static func openMacvtap(path: String, queues: Int = 1) throws(NetworkError) -> [TapBackend] {
    var backends: [TapBackend] = []
    for _ in 0..<max(1, queues) {
      do { backends.append(try openMacvtapQueue(path: path)) } catch {
        for backend in backends { backend.close() }
        throw error
      }
    }
    return backends
  }

  private static func openMacvtapQueue(path: String) throws(NetworkError) -> TapBackend {
    let fd = csys_macvtap_open(path)
    if fd < 0 {
      let code = errno
      switch code {
      case ENOENT:
        throw NetworkError(
          "\(path) does not exist: create a macvtap (ip link add link eth0 name macvtap0 type macvtap) and use /dev/tap<its index>"
        )
      case EPERM, EACCES:
        throw NetworkError(
          "cannot open \(path): \(NetworkError.text(code)) (give this user access to it, or run as root)")
      case ENODEV, ENOTTY, EINVAL:
        throw NetworkError("\(path) is not a macvtap character device (\(NetworkError.text(code)))")
      default:
        throw NetworkError("cannot use \(path) as a macvtap: \(NetworkError.text(code))")
      }
    }
    let backend = TapBackend(fd: fd, description: path, interfaceName: path)
    try backend.setHeaderSize()
    return backend
  }

  /// Attaches or detaches this queue of a multiqueue tap or macvtap: the kernel steers no
  /// frame to a detached queue, and the guest's driver uses only the queue pairs it enabled.
  public func setQueueEnabled(_ enabled: Bool) {
    _ = csys_tap_set_queue_enabled(fd, enabled ? 1 : 0)
  }

  private static var currentUser: String {
    guard let entry = getpwuid(getuid()), let name = entry.pointee.pw_name else { return "\(getuid())" }
    return String(cString: name)
  }

  private func setHeaderSize() throws(NetworkError) {
    guard csys_tap_set_header_size(fd, Int32(headerLength)) == 0 else {
      let code = errno
      close()
      throw NetworkError(
        "\(description) does not take a \(headerLength)-byte virtio-net header: \(NetworkError.text(code))")
    }
  }

  public func setNegotiatedFeatures(_ features: UInt64) {
    var flags: UInt32 = 0
    if features & VirtioNetFeature.guestChecksum != 0 {
      flags |= csys_tun_f_csum
      if features & VirtioNetFeature.guestTSO4 != 0 { flags |= csys_tun_f_tso4 }
      if features & VirtioNetFeature.guestTSO6 != 0 { flags |= csys_tun_f_tso6 }
      if features & VirtioNetFeature.guestECN != 0, flags & (csys_tun_f_tso4 | csys_tun_f_tso6) != 0 {
        flags |= csys_tun_f_tso_ecn
      }
    }
    // Best effort: a kernel that refuses some offload sends plain frames, which is correct.
    if csys_tap_set_offload(fd, flags) != 0 { _ = csys_tap_set_offload(fd, 0) }
  }

  /// Lets the tap itself hand on only frames to `addresses` (and every multicast frame with
  /// `allMulticast`); nil lets every frame through. For a kernel data path, which no filter of
  /// skvm's sees (TUNSETTXFILTER).
  public func filter(addresses: [[UInt8]]?, allMulticast: Bool) {
    let bytes = (addresses ?? []).flatMap { $0.count == 6 ? $0 : [] }
    _ = csys_tap_set_filter(fd, allMulticast ? 1 : 0, UInt32(bytes.count / 6), bytes)
  }

  public func attach(
    deliver: @escaping @Sendable (UnsafeRawBufferPointer) -> Bool, wake: @escaping @Sendable () -> Void
  ) {
    self.deliver = deliver
  }

  public func send(_ parts: UnsafeBufferPointer<iovec>) -> Bool {
    while true {
      let written = writev(fd, parts.baseAddress, Int32(parts.count))
      if written >= 0 { return true }
      if errno != EINTR { return false }
    }
  }

  public func preparePoll(_ descriptors: inout [pollfd]) -> Int32 {
    // While a frame is held back nothing more is read: the kernel queues (and at its limit
    // drops) what arrives, as it does for any slow reader.
    descriptors.append(pollfd(fd: failed ? -1 : fd, events: heldLength > 0 ? 0 : Int16(POLLIN), revents: 0))
    return -1
  }

  public func service(_ descriptors: ArraySlice<pollfd>) {
    if let result = descriptors.first, result.revents & Int16(POLLERR | POLLHUP | POLLNVAL) != 0 {
      failed = true
    }
    if heldLength > 0 {
      guard deliver(UnsafeRawBufferPointer(rebasing: frame[0..<heldLength])) else { return }
      heldLength = 0
    }
    guard !failed else { return }
    for _ in 0..<Self.frameBudget {
      let count = read(fd, frame.baseAddress, frame.count)
      if count < 0 {
        if errno == EINTR { continue }
        return
      }
      if count == 0 { return }
      guard count >= headerLength + 14 else { continue }  // shorter than an Ethernet header
      guard deliver(UnsafeRawBufferPointer(rebasing: frame[0..<count])) else {
        heldLength = count
        return
      }
    }
  }

  /// Closes the descriptor (once; a tap skvm created disappears with it).
  public func close() {
    guard !isClosed.exchange(true, ordering: .relaxed) else { return }
    Glibc.close(fd)
  }

  deinit {
    close()
    frame.deallocate()
  }
}
