import Devices
import KVM
import Synchronization
import Virtio

/// The VM's GSI routing table: KVM's default routes to the PIC and IOAPIC pins, plus one MSI
/// route with an irqfd per device vector, so raising a device interrupt is one eventfd write
/// that KVM turns into the message without a VMM round trip.
final class InterruptRouting: Sendable {
  /// GSIs below this are the irqchip pins (IOAPIC 0–23); MSI routes take the ones above.
  static let firstMessageGSI: UInt32 = 24
  /// The last GSI handed to a vector (KVM allows 4096 routes on x86): this bounds what one
  /// VM can ask of the kernel.
  static let lastMessageGSI: UInt32 = 1023

  private let vm: KVMVirtualMachine
  private let table = Mutex<Table>(Table())

  private struct Table {
    var messages: [UInt32: (address: UInt64, data: UInt32)] = [:]
    var nextGSI = InterruptRouting.firstMessageGSI
  }

  init(vm: KVMVirtualMachine) { self.vm = vm }

  /// A fresh GSI for a vector, with an irqfd on it; nil when KVM refuses (the caller then
  /// falls back to `KVM_SIGNAL_MSI`).
  func allocateMessageRoute() -> (gsi: UInt32, event: EventFD)? {
    let gsi = table.withLock { table -> UInt32? in
      guard table.nextGSI <= Self.lastMessageGSI else { return nil }
      defer { table.nextGSI += 1 }
      return table.nextGSI
    }
    guard let gsi, let event = try? EventFD() else { return nil }
    do { try vm.registerIRQFD(event.rawValue, gsi: gsi) } catch { return nil }
    return (gsi, event)
  }

  /// Points `gsi` at the message (`address`, `data`) and rewrites KVM's table.
  func route(gsi: UInt32, address: UInt64, data: UInt32) throws(KVMError) {
    try table.withLock { table throws(KVMError) in
      table.messages[gsi] = (address, data)
      try vm.setGSIRouting(
        Self.irqchipRoutes
          + table.messages.sorted { $0.key < $1.key }.map { gsi, message in
            .msi(
              gsi: gsi, addressLow: UInt32(truncatingIfNeeded: message.address),
              addressHigh: UInt32(truncatingIfNeeded: message.address >> 32), data: message.data)
          })
    }
  }

  /// KVM's own default table (virt/kvm/irqchip.c): GSIs 0–15 to both PICs and the IOAPIC,
  /// 16–23 to the IOAPIC alone. Setting a table replaces it, so it is repeated here.
  static let irqchipRoutes: [KVMVirtualMachine.GSIRoute] = (UInt32(0)..<24).flatMap {
    gsi -> [KVMVirtualMachine.GSIRoute] in
    let ioapic = KVMVirtualMachine.GSIRoute.irqchip(gsi: gsi, chip: 2, pin: gsi)
    guard gsi < 16 else { return [ioapic] }
    return [.irqchip(gsi: gsi, chip: gsi < 8 ? 0 : 1, pin: gsi % 8), ioapic]
  }
}

/// A virtio-pci function's interrupts on KVM: each MSI-X vector through its own irqfd (the
/// route is rewritten only when the driver reprograms the vector), INTx as a level on a
/// shared IOAPIC pin.
final class KVMVirtioInterrupts: VirtioInterruptSink {
  private let vm: KVMVirtualMachine
  private let routing: InterruptRouting
  private let line: SharedInterruptLine.Source
  private let vectors: Mutex<[Vector]>

  private struct Vector {
    var route: (gsi: UInt32, event: EventFD)?
    var message: (address: UInt64, data: UInt32)?
    var unavailable = false
  }

  init(vm: KVMVirtualMachine, routing: InterruptRouting, vectorCount: Int, line: SharedInterruptLine.Source) {
    self.vm = vm
    self.routing = routing
    self.line = line
    vectors = Mutex(Array(repeating: Vector(), count: vectorCount))
  }

  func deliverMessage(vector index: Int, address: UInt64, data: UInt32) {
    let event = vectors.withLock { vectors -> EventFD? in
      guard vectors.indices.contains(index) else { return nil }
      return Self.prepare(&vectors[index], routing: routing, address: address, data: data)
    }
    if let event {
      event.signal()
    } else {
      try? vm.signalMSI(address: address, data: data)
    }
  }

  /// The vector's irqfd, routed to the message: vhost-net signals it and KVM injects the
  /// interrupt with no skvm thread in between.
  func directEvent(vector index: Int, address: UInt64, data: UInt32) -> Int32? {
    vectors.withLock { vectors -> Int32? in
      guard vectors.indices.contains(index) else { return nil }
      return Self.prepare(&vectors[index], routing: routing, address: address, data: data)?.rawValue
    }
  }

  /// The vector's irqfd, routed to (`address`, `data`); nil when KVM cannot route it.
  private static func prepare(_ vector: inout Vector, routing: InterruptRouting, address: UInt64, data: UInt32)
    -> EventFD?
  {
    if vector.route == nil, !vector.unavailable {
      vector.route = routing.allocateMessageRoute()
      vector.unavailable = vector.route == nil
    }
    guard let route = vector.route else { return nil }
    if vector.message?.address != address || vector.message?.data != data {
      do {
        try routing.route(gsi: route.gsi, address: address, data: data)
        vector.message = (address, data)
      } catch {
        return nil
      }
    }
    return route.event
  }

  func setLine(_ asserted: Bool) { line.set(asserted) }
}

/// A level-triggered IOAPIC pin that several PCI functions may share (by the `_PRT`
/// swizzle): the pin is high while any of them asserts it.
final class SharedInterruptLine: Sendable {
  private let line: KVMInterruptLine
  private let asserted = Mutex<Set<Int>>([])

  init(vm: KVMVirtualMachine, gsi: UInt32) { line = KVMInterruptLine(vm: vm, gsi: gsi) }

  /// One function's hold on the line.
  struct Source: Sendable {
    let shared: SharedInterruptLine
    let id: Int
    func set(_ high: Bool) { shared.set(high, from: id) }
  }

  func source(_ id: Int) -> Source { Source(shared: self, id: id) }

  private func set(_ high: Bool, from id: Int) {
    asserted.withLock { asserted in
      let wasHigh = !asserted.isEmpty
      if high { asserted.insert(id) } else { asserted.remove(id) }
      // Level-triggered: only a change of level means anything to the IOAPIC.
      if wasHigh != !asserted.isEmpty { line.set(high: !asserted.isEmpty) }
    }
  }
}
