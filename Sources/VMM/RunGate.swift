import Glibc
import Synchronization

/// What every vCPU thread checks on every exit: whether the machine is stopping or
/// pausing. One relaxed atomic load on the hot path; the rest happens off it.
///
/// Pausing parks each vCPU thread here, outside `KVM_RUN`, so its state is stable
/// and readable by other threads until the machine resumes.
final class RunGate: @unchecked Sendable {
  private static let stopBit: UInt8 = 1
  private static let pauseBit: UInt8 = 2

  private let attention = Atomic<UInt8>(0)
  private let lock = ConditionLock()
  /// Guarded by `lock`.
  private var parkedThreads = 0

  /// True when the machine is stopping or pausing.
  @inline(__always)
  var needsAttention: Bool { attention.load(ordering: .relaxed) != 0 }

  var isStopping: Bool { attention.load(ordering: .acquiring) & Self.stopBit != 0 }

  func requestStop() {
    lock.withLock {
      attention.bitwiseOr(Self.stopBit, ordering: .sequentiallyConsistent)
      lock.broadcast()
    }
  }

  func requestPause() {
    attention.bitwiseOr(Self.pauseBit, ordering: .sequentiallyConsistent)
  }

  func releasePause() {
    lock.withLock {
      attention.bitwiseAnd(~Self.pauseBit, ordering: .sequentiallyConsistent)
      lock.broadcast()
    }
  }

  /// Called by a vCPU thread: waits here while a pause is requested and the machine is not stopping.
  func park() {
    lock.withLock {
      parkedThreads += 1
      lock.broadcast()
      lock.wait { attention.load(ordering: .acquiring) & Self.pauseBit == 0 || isStopping }
      parkedThreads -= 1
    }
  }

  /// Waits until `count` vCPU threads are parked, or the machine stops; true if they parked.
  func waitUntilParked(_ count: Int) -> Bool {
    lock.withLock {
      lock.wait { parkedThreads >= count || isStopping }
      return !isStopping
    }
  }
}
