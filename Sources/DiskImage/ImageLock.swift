import CSystemCalls
import Glibc

/// QEMU's image locking protocol, so that skvm and QEMU (qemu-system, qemu-img, qemu-io) see
/// each other's use of an image file — two writers, or a reader beside a writer, are refused
/// whichever program came first.
///
/// Each of QEMU's block permissions (`BLK_PERM_*`: consistent read, write, write-unchanged,
/// resize) has two bytes in the file: byte 100 + n is locked (shared, an open file description
/// lock) by every user that *holds* permission n, byte 200 + n by every user that *does not
/// share* it. Taking a permission that someone refuses to share, or refusing one that someone
/// holds, is a conflict. A user first locks its own bytes, then looks for conflicts, so two
/// racing openers both back off rather than both succeed. The bytes may lie past the end of the
/// file: locks do not need data there.
enum ImageLock {
  /// QEMU's block permissions, by bit number.
  enum Permission: Int, CaseIterable {
    case consistentRead = 0
    case write
    case writeUnchanged
    case resize

    var name: String {
      switch self {
      case .consistentRead: "consistent read"
      case .write: "write"
      case .writeUnchanged: "write unchanged"
      case .resize: "resize"
      }
    }
  }

  static let heldBase: off_t = 100
  static let unsharedBase: off_t = 200

  /// What a user of an image holds and refuses to share: a reader (a read-only disk, a backing
  /// file, `img info`) reads and lets nobody write or resize under it; a writer also writes
  /// and resizes, and lets nobody else do either — as QEMU's devices and qemu-img do.
  static func permissions(writable: Bool) -> (held: [Permission], unshared: [Permission]) {
    writable ? ([.consistentRead, .write, .resize], [.write, .resize]) : ([.consistentRead], [.write, .resize])
  }

  /// Why the lock could not be taken.
  enum Conflict: Error {
    /// Another user holds a permission this one refuses to share.
    case heldByAnother(Permission)
    /// Another user refuses to share a permission this one needs.
    case unsharedByAnother(Permission)
  }

  /// Takes the locks of a reader or a writer on `fd`; on a conflict, releases them and throws.
  /// File systems without open file description locks get no locking (as QEMU's `locking=auto`).
  static func acquire(_ fd: Int32, writable: Bool) throws(Conflict) {
    let (held, unshared) = permissions(writable: writable)
    for permission in held { _ = csys_ofd_lock_byte(fd, heldBase + off_t(permission.rawValue), 1) }
    for permission in unshared { _ = csys_ofd_lock_byte(fd, unsharedBase + off_t(permission.rawValue), 1) }
    for permission in unshared where csys_ofd_byte_locked_by_others(fd, heldBase + off_t(permission.rawValue)) == 1 {
      release(fd)
      throw .heldByAnother(permission)
    }
    for permission in held where csys_ofd_byte_locked_by_others(fd, unsharedBase + off_t(permission.rawValue)) == 1 {
      release(fd)
      throw .unsharedByAnother(permission)
    }
  }

  /// Releases every lock this open file description holds on the image.
  static func release(_ fd: Int32) {
    for permission in Permission.allCases {
      _ = csys_ofd_lock_byte(fd, heldBase + off_t(permission.rawValue), 0)
      _ = csys_ofd_lock_byte(fd, unsharedBase + off_t(permission.rawValue), 0)
    }
  }
}
