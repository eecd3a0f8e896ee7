import ArgumentParser
import DiskImage

/// `skvm img rebase [-f FMT] [-u] -b BACKING [-F FMT] FILE`: a new backing file. Safe mode
/// (without -u) first copies into the image every range where the old and new backing differ.
struct ImgRebase: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "rebase", abstract: "Change an image's backing file (qemu-img rebase).")

  @Option(name: .short, help: "Format of the image (qcow2).")
  var f: DiskImageFormat?

  @Flag(name: .short, help: "Unsafe: only change the name, copy nothing.")
  var u = false

  @Option(name: .short, help: "The new backing file ('' for none).")
  var b: String

  @Option(name: .customShort("F"), help: "Format of the new backing file.")
  var backingFormat: DiskImageFormat?

  @Argument(help: "The image.")
  var filename: String

  func run() throws {
    do {
      guard let image = try DiskImage.open(filename, format: f, writable: true) as? QCow2Image else {
        throw imgFailure("only qcow2 images have a backing file")
      }
      let newName = b.isEmpty ? nil : b
      var format = backingFormat
      if !u {
        let newBacking = try newName.map { name throws(DiskImageError) in
          try DiskImage.open(DiskImage.resolve(backing: name, of: filename), format: backingFormat)
        }
        if let newName, format == nil {
          format = try DiskImage.detectFormat(DiskImage.resolve(backing: newName, of: filename))
        }
        try copyDifferences(into: image, newBacking: newBacking)
      }
      try image.setBacking(file: newName, format: format)
    } catch let error as ExitCode {
      throw error
    } catch {
      throw imgFailure("Could not rebase '\(filename)': \(error)")
    }
  }

  /// Where the image itself has nothing, writes the old backing's bytes wherever the new
  /// backing would read differently, so the guest sees the same disk afterwards.
  private func copyDifferences(into image: QCow2Image, newBacking: (any BlockBackend)?) throws {
    let clusterSize = Int(image.header.clusterSize)
    var position: UInt64 = 0
    while position < image.size {
      let count = Int(min(UInt64(clusterSize), image.size - position))
      if try image.isUnallocated(at: position) {
        let old =
          try image.backing.map { try readPadded($0, count: count, at: position) }
          ?? [UInt8](repeating: 0, count: count)
        let new =
          try newBacking.map { try readPadded($0, count: count, at: position) } ?? [UInt8](repeating: 0, count: count)
        if old != new { try image.write(old, at: position) }
      }
      position += UInt64(count)
    }
    try image.flush()
  }

  private func readPadded(_ image: any BlockBackend, count: Int, at position: UInt64) throws -> [UInt8] {
    guard position < image.size else { return [UInt8](repeating: 0, count: count) }
    let available = Int(min(UInt64(count), image.size - position))
    return try image.read(count: available, at: position) + [UInt8](repeating: 0, count: count - available)
  }
}
