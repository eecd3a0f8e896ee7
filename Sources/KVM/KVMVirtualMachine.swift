import CKVM
import Glibc

/// A KVM virtual machine file descriptor: memory slots, interrupt controllers, eventfds, vCPUs.
public final class KVMVirtualMachine: Sendable {
  /// The VM's file descriptor.
  public let fd: OwnedFileDescriptor
  /// The KVM system the VM belongs to.
  public let system: KVMSystem

  init(fd: OwnedFileDescriptor, system: KVMSystem) {
    self.fd = fd
    self.system = system
  }

  /// `KVM_CHECK_EXTENSION` on the VM fd (some capabilities are per VM).
  public func checkExtension(_ capability: Int32) -> Int32 {
    max(0, ckvm_ioctl_value(fd.rawValue, CKVM_CHECK_EXTENSION, UInt(capability)))
  }

  // MARK: Memory

  /// Flags for a memory slot.
  public struct MemorySlotFlags: OptionSet, Sendable {
    public let rawValue: UInt32
    public init(rawValue: UInt32) { self.rawValue = rawValue }
    /// Track writes, for `dirtyLog(slot:pageCount:)`.
    public static let logDirtyPages = MemorySlotFlags(rawValue: UInt32(KVM_MEM_LOG_DIRTY_PAGES))
    /// Guest writes exit as MMIO instead of changing memory.
    public static let readOnly = MemorySlotFlags(rawValue: UInt32(KVM_MEM_READONLY))
  }

  /// Maps `size` bytes of host memory at `host` into the guest at `guestAddress`, as slot `slot`.
  /// A size of 0 deletes the slot.
  public func setMemorySlot(
    _ slot: UInt32, guestAddress: UInt64, size: UInt64, host: UnsafeMutableRawPointer?,
    flags: MemorySlotFlags = []
  ) throws(KVMError) {
    var region = kvm_userspace_memory_region(
      slot: slot, flags: flags.rawValue, guest_phys_addr: guestAddress, memory_size: size,
      userspace_addr: UInt64(UInt(bitPattern: host)))
    do {
      try fd.ioctl(CKVM_SET_USER_MEMORY_REGION, &region, "KVM_SET_USER_MEMORY_REGION")
    } catch {
      throw KVMError(
        error.operation, errno: error.code,
        detail: "slot \(slot), guest 0x\(String(guestAddress, radix: 16)), \(size) bytes")
    }
  }

  /// `KVM_GET_DIRTY_LOG`: one bit per page of `slot` written since the last call (the log is reset).
  public func dirtyLog(slot: UInt32, pageCount: Int) throws(KVMError) -> [UInt64] {
    var bitmap = [UInt64](repeating: 0, count: (pageCount + 63) / 64)
    let result = bitmap.withUnsafeMutableBytes { bytes in
      var log = kvm_dirty_log()
      log.slot = slot
      log.dirty_bitmap = bytes.baseAddress
      return withUnsafeMutablePointer(to: &log) { ckvm_ioctl(fd.rawValue, CKVM_GET_DIRTY_LOG, $0) }
    }
    if result < 0 { throw KVMError("KVM_GET_DIRTY_LOG", errno: errno, detail: "slot \(slot)") }
    return bitmap
  }

  // MARK: x86 platform

  /// `KVM_SET_TSS_ADDR`: three pages of guest-physical space KVM may use on Intel hosts.
  public func setTSSAddress(_ address: UInt64) throws(KVMError) {
    try fd.ioctl(CKVM_SET_TSS_ADDR, value: UInt(address), "KVM_SET_TSS_ADDR")
  }

  /// `KVM_SET_IDENTITY_MAP_ADDR`: one page for the real-mode identity map on Intel hosts.
  public func setIdentityMapAddress(_ address: UInt64) throws(KVMError) {
    var value = address
    try fd.ioctl(CKVM_SET_IDENTITY_MAP_ADDR, &value, "KVM_SET_IDENTITY_MAP_ADDR")
  }

  /// `KVM_CREATE_IRQCHIP`: the in-kernel PIC pair, IOAPIC and a LAPIC per vCPU.
  public func createInterruptController() throws(KVMError) {
    try fd.ioctl(CKVM_CREATE_IRQCHIP, value: 0, "KVM_CREATE_IRQCHIP")
  }

  /// `KVM_CREATE_PIT2`: the in-kernel i8254 timer.
  public func createPIT() throws(KVMError) {
    var config = kvm_pit_config()
    config.flags = UInt32(KVM_PIT_SPEAKER_DUMMY)
    try fd.ioctl(CKVM_CREATE_PIT2, &config, "KVM_CREATE_PIT2")
  }

  /// `KVM_IRQ_LINE`: raises or lowers interrupt line `gsi` of the in-kernel irqchip.
  public func setInterruptLine(_ gsi: UInt32, high: Bool) throws(KVMError) {
    var level = kvm_irq_level()
    level.irq = gsi
    level.level = high ? 1 : 0
    try fd.ioctl(CKVM_IRQ_LINE, &level, "KVM_IRQ_LINE")
  }

  /// `KVM_ENABLE_CAP` on the VM.
  public func enableCapability(_ capability: UInt32, arguments: [UInt64] = []) throws(KVMError) {
    var cap = kvm_enable_cap()
    cap.cap = capability
    withUnsafeMutableBytes(of: &cap.args) { raw in
      for (position, value) in arguments.prefix(4).enumerated() {
        raw.storeBytes(of: value, toByteOffset: position * 8, as: UInt64.self)
      }
    }
    try fd.ioctl(CKVM_ENABLE_CAP, &cap, "KVM_ENABLE_CAP(\(capability))")
  }

  // MARK: eventfds

  /// Where an ioeventfd listens.
  public enum IOEventAddress: Sendable, Hashable {
    case port(UInt16)
    case mmio(UInt64)
  }

  /// `KVM_IOEVENTFD`: signal `eventFD` when the guest writes `length` bytes at `address`
  /// (only when the value equals `match`, if given). The write completes in the kernel.
  public func registerIOEvent(
    _ eventFD: Int32, at address: IOEventAddress, length: UInt32, match: UInt64? = nil
  ) throws(KVMError) {
    try ioEvent(eventFD, at: address, length: length, match: match, extraFlags: 0)
  }

  /// Removes an ioeventfd registered with the same arguments.
  public func unregisterIOEvent(
    _ eventFD: Int32, at address: IOEventAddress, length: UInt32, match: UInt64? = nil
  ) throws(KVMError) {
    try ioEvent(
      eventFD, at: address, length: length, match: match,
      extraFlags: UInt32(1 << kvm_ioeventfd_flag_nr_deassign))
  }

  private func ioEvent(
    _ eventFD: Int32, at address: IOEventAddress, length: UInt32, match: UInt64?, extraFlags: UInt32
  ) throws(KVMError) {
    var request = kvm_ioeventfd()
    request.fd = eventFD
    request.len = length
    request.flags = extraFlags
    switch address {
    case .port(let port):
      request.addr = UInt64(port)
      request.flags |= UInt32(1 << kvm_ioeventfd_flag_nr_pio)
    case .mmio(let mmio):
      request.addr = mmio
    }
    if let match {
      request.datamatch = match
      request.flags |= UInt32(1 << kvm_ioeventfd_flag_nr_datamatch)
    }
    try fd.ioctl(CKVM_IOEVENTFD, &request, "KVM_IOEVENTFD")
  }

  /// `KVM_IRQFD`: writing to `eventFD` raises interrupt `gsi` (edge), without a VMM round trip.
  public func registerIRQFD(_ eventFD: Int32, gsi: UInt32, resampleFD: Int32? = nil) throws(KVMError) {
    var request = kvm_irqfd()
    request.fd = UInt32(bitPattern: eventFD)
    request.gsi = gsi
    if let resampleFD {
      request.flags = UInt32(KVM_IRQFD_FLAG_RESAMPLE)
      request.resamplefd = UInt32(bitPattern: resampleFD)
    }
    try fd.ioctl(CKVM_IRQFD, &request, "KVM_IRQFD")
  }

  /// `KVM_SIGNAL_MSI`: delivers one MSI message (address, data) to the in-kernel LAPICs.
  public func signalMSI(address: UInt64, data: UInt32) throws(KVMError) {
    var message = kvm_msi()
    message.address_lo = UInt32(truncatingIfNeeded: address)
    message.address_hi = UInt32(truncatingIfNeeded: address >> 32)
    message.data = data
    _ = try fd.ioctl(CKVM_SIGNAL_MSI, &message, "KVM_SIGNAL_MSI")
  }

  /// Removes an irqfd.
  public func unregisterIRQFD(_ eventFD: Int32, gsi: UInt32) throws(KVMError) {
    var request = kvm_irqfd()
    request.fd = UInt32(bitPattern: eventFD)
    request.gsi = gsi
    request.flags = UInt32(KVM_IRQFD_FLAG_DEASSIGN)
    try fd.ioctl(CKVM_IRQFD, &request, "KVM_IRQFD")
  }

  /// One entry of the GSI routing table.
  public enum GSIRoute: Sendable, Hashable {
    /// Route `gsi` to pin `pin` of irqchip `chip` (0/1: PIC master/slave, 2: IOAPIC).
    case irqchip(gsi: UInt32, chip: UInt32, pin: UInt32)
    /// Route `gsi` to an MSI message.
    case msi(gsi: UInt32, addressLow: UInt32, addressHigh: UInt32, data: UInt32)
  }

  /// `KVM_SET_GSI_ROUTING`: replaces the whole routing table.
  public func setGSIRouting(_ routes: [GSIRoute]) throws(KVMError) {
    let size = CKVM_IRQ_ROUTING_HEADER_SIZE + routes.count * MemoryLayout<kvm_irq_routing_entry>.stride
    let raw = UnsafeMutableRawPointer.allocate(byteCount: size, alignment: 8)
    defer { raw.deallocate() }
    raw.initializeMemory(as: UInt8.self, repeating: 0, count: size)
    raw.bindMemory(to: kvm_irq_routing.self, capacity: 1).pointee.nr = UInt32(routes.count)
    let entries = (raw + CKVM_IRQ_ROUTING_HEADER_SIZE).bindMemory(
      to: kvm_irq_routing_entry.self, capacity: routes.count)
    for (position, route) in routes.enumerated() {
      var entry = kvm_irq_routing_entry()
      switch route {
      case .irqchip(let gsi, let chip, let pin):
        entry.gsi = gsi
        entry.type = UInt32(KVM_IRQ_ROUTING_IRQCHIP)
        entry.u.irqchip.irqchip = chip
        entry.u.irqchip.pin = pin
      case .msi(let gsi, let addressLow, let addressHigh, let data):
        entry.gsi = gsi
        entry.type = UInt32(KVM_IRQ_ROUTING_MSI)
        entry.u.msi.address_lo = addressLow
        entry.u.msi.address_hi = addressHigh
        entry.u.msi.data = data
      }
      entries[position] = entry
    }
    try fd.ioctl(CKVM_SET_GSI_ROUTING, raw, "KVM_SET_GSI_ROUTING")
  }

  // MARK: vCPUs

  /// `KVM_CREATE_VCPU` with APIC id `id`, and maps its `kvm_run` area.
  public func createVCPU(id: UInt32) throws(KVMError) -> KVMVCPU {
    let raw = ckvm_ioctl_value(fd.rawValue, CKVM_CREATE_VCPU, UInt(id))
    if raw < 0 { throw KVMError("KVM_CREATE_VCPU", errno: errno, detail: "vCPU \(id)") }
    let owned = OwnedFileDescriptor(raw)
    let size = try system.vcpuMmapSize()
    guard let mapping = mmap(nil, size, PROT_READ | PROT_WRITE, MAP_SHARED, raw, 0), mapping != MAP_FAILED
    else { throw KVMError("mmap(kvm_run)", errno: errno, detail: "vCPU \(id)") }
    return KVMVCPU(id: id, fd: owned, run: mapping, runSize: size)
  }
}
