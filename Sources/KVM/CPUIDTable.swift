import CKVM

/// One CPUID leaf (function, index) and the registers it returns.
public struct CPUIDEntry: Sendable, Hashable, Codable {
  public var function: UInt32
  public var index: UInt32
  public var flags: UInt32
  public var eax: UInt32
  public var ebx: UInt32
  public var ecx: UInt32
  public var edx: UInt32

  public init(
    function: UInt32, index: UInt32 = 0, flags: UInt32 = 0, eax: UInt32, ebx: UInt32, ecx: UInt32, edx: UInt32
  ) {
    self.function = function
    self.index = index
    self.flags = flags
    self.eax = eax
    self.ebx = ebx
    self.ecx = ecx
    self.edx = edx
  }

  init(_ raw: kvm_cpuid_entry2) {
    self.init(
      function: raw.function, index: raw.index, flags: raw.flags,
      eax: raw.eax, ebx: raw.ebx, ecx: raw.ecx, edx: raw.edx)
  }

  var raw: kvm_cpuid_entry2 {
    var entry = kvm_cpuid_entry2()
    entry.function = function
    entry.index = index
    entry.flags = flags
    entry.eax = eax
    entry.ebx = ebx
    entry.ecx = ecx
    entry.edx = edx
    return entry
  }

  /// Whether `index` selects a sub-leaf of this function.
  public var isIndexed: Bool { flags & UInt32(KVM_CPUID_FLAG_SIGNIFCANT_INDEX) != 0 }
}

/// A set of CPUID leaves, as the host supports them or as a guest will see them.
public struct CPUIDTable: Sendable, Hashable, Codable {
  public var entries: [CPUIDEntry]

  public init(entries: [CPUIDEntry]) {
    self.entries = entries
  }

  /// The entry for `function` (and `index`, for indexed leaves), if present.
  public subscript(function: UInt32, index: UInt32 = 0) -> CPUIDEntry? {
    get { entries.first { $0.function == function && (!$0.isIndexed || $0.index == index) } }
    set {
      let position = entries.firstIndex { $0.function == function && (!$0.isIndexed || $0.index == index) }
      switch (position, newValue) {
      case (let position?, let entry?): entries[position] = entry
      case (let position?, nil): entries.remove(at: position)
      case (nil, let entry?): entries.append(entry)
      case (nil, nil): break
      }
    }
  }

  /// Applies `body` to every entry of `function` (all of its sub-leaves).
  public mutating func update(function: UInt32, _ body: (inout CPUIDEntry) -> Void) {
    for position in entries.indices where entries[position].function == function {
      body(&entries[position])
    }
  }

  /// A `struct kvm_cpuid2` with room for `capacity` entries, as the ioctls want it.
  final class RawBuffer {
    let pointer: UnsafeMutableRawPointer
    let capacity: Int

    init(capacity: Int) {
      self.capacity = capacity
      let size = CKVM_CPUID2_HEADER_SIZE + capacity * MemoryLayout<kvm_cpuid_entry2>.stride
      pointer = UnsafeMutableRawPointer.allocate(byteCount: size, alignment: 16)
      pointer.initializeMemory(as: UInt8.self, repeating: 0, count: size)
      pointer.bindMemory(to: kvm_cpuid2.self, capacity: 1).pointee.nent = UInt32(capacity)
    }

    convenience init(_ table: CPUIDTable) {
      self.init(capacity: table.entries.count)
      for (position, entry) in table.entries.enumerated() { entries[position] = entry.raw }
    }

    deinit { pointer.deallocate() }

    var entries: UnsafeMutablePointer<kvm_cpuid_entry2> {
      (pointer + CKVM_CPUID2_HEADER_SIZE).bindMemory(to: kvm_cpuid_entry2.self, capacity: capacity)
    }

    func table() -> CPUIDTable {
      let count = Int(pointer.bindMemory(to: kvm_cpuid2.self, capacity: 1).pointee.nent)
      return CPUIDTable(entries: (0..<min(count, capacity)).map { CPUIDEntry(entries[$0]) })
    }
  }
}
