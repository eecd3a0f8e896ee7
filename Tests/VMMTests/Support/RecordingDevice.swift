import SwiftKVM
import Synchronization

/// A test device: eight 8-byte registers that read back what was written, and a log of every access.
final class RecordingDevice: IODevice {
  struct Access: Equatable, Sendable {
    let offset: UInt64
    let width: Int
    let value: UInt64
    let isWrite: Bool
  }

  let name: String
  private let state = Mutex<(registers: [UInt64], log: [Access])>((Array(repeating: 0, count: 8), []))

  init(name: String = "recorder") {
    self.name = name
  }

  var log: [Access] { state.withLock { $0.log } }

  func read(offset: UInt64, width: Int) -> UInt64 {
    state.withLock { state in
      let value = state.registers[Int(offset / 8) % 8] & .allOnes(width: width)
      state.log.append(Access(offset: offset, width: width, value: value, isWrite: false))
      return value
    }
  }

  func write(offset: UInt64, width: Int, value: UInt64) {
    state.withLock { state in
      state.registers[Int(offset / 8) % 8] = value & .allOnes(width: width)
      state.log.append(Access(offset: offset, width: width, value: value, isWrite: true))
    }
  }
}

/// A test device that counts writes, from any number of vCPUs at once.
final class CountingDevice: IODevice {
  let name = "counter"
  private let count = Atomic<UInt64>(0)

  var total: UInt64 { count.load(ordering: .relaxed) }

  func read(offset: UInt64, width: Int) -> UInt64 { count.load(ordering: .relaxed) & .allOnes(width: width) }

  func write(offset: UInt64, width: Int, value: UInt64) {
    count.add(1, ordering: .relaxed)
  }
}
