import Foundation
import Testing

@testable import DiskImage

/// virtio-blk issues requests from several threads at once: the image must serialise its
/// metadata so that parallel allocating writes and reads all land.
@Suite("Parallel I/O through one image", .enabled(if: Oracle.available, "needs qemu-img (Debian qemu-utils)"))
struct ConcurrencyTests {
  @Test("Four threads write disjoint stripes while others read; every byte lands; qemu-img check is clean")
  func parallelWriters() throws {
    let directory = try Oracle.scratch()
    defer { try? FileManager.default.removeItem(at: directory) }
    let path = directory.appendingPathComponent("parallel.qcow2").path
    var options = QCow2CreateOptions(size: 32 << 20)
    options.clusterSize = 4096
    let image = try QCow2Image.create(at: path, options: options)
    let stripe = 6000
    let rounds = 400
    DispatchQueue.concurrentPerform(iterations: 6) { worker in
      for round in 0..<rounds {
        let offset = UInt64((round * 4 + worker % 4) * stripe)
        if worker < 4 {
          try? image.write([UInt8](repeating: UInt8(worker + 1), count: stripe), at: offset)
        } else {
          _ = try? image.read(count: stripe, at: offset)
        }
      }
    }
    try image.flush()
    var expected = [UInt8](repeating: 0, count: 32 << 20)
    for round in 0..<rounds {
      for worker in 0..<4 {
        let offset = (round * 4 + worker) * stripe
        expected.replaceSubrange(offset..<offset + stripe, with: repeatElement(UInt8(worker + 1), count: stripe))
      }
    }
    #expect(try image.read(count: 32 << 20, at: 0) == expected)
    // Closed first: qemu-img, like skvm, will not check an image another process has open for writing.
    image.close()
    try Oracle.run("qemu-img", ["check", path])
  }
}
