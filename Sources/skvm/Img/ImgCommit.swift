import ArgumentParser
import DiskImage

/// `skvm img commit [-f FMT] [-d] FILE`: writes the image's own clusters into its backing
/// file, then empties the image (unless -d), as qemu-img commit does.
struct ImgCommit: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "commit", abstract: "Write an overlay's changes into its backing file (qemu-img commit).")

  @Option(name: .short, help: "Format of the image (qcow2).")
  var f: DiskImageFormat?

  @Flag(name: .short, help: "Keep the image's contents (do not empty it).")
  var d = false

  @Argument(help: "The overlay image.")
  var filename: String

  func run() throws {
    do {
      guard let top = try DiskImage.open(filename, format: f, writable: !d) as? QCow2Image,
        let name = top.header.backingFile
      else { throw imgFailure("'\(filename)' has no backing file to commit to") }
      let backingPath = DiskImage.resolve(backing: name, of: filename)
      let format = top.header.backingFormat.flatMap(DiskImageFormat.init)
      let backing = try DiskImage.open(backingPath, format: format, writable: true)
      let clusterSize = Int(top.header.clusterSize)
      var position: UInt64 = 0
      while position < min(top.size, backing.size) {
        let count = Int(min(UInt64(clusterSize), min(top.size, backing.size) - position))
        if try !top.isUnallocated(at: position) {
          try backing.write(try top.read(count: count, at: position), at: position)
        }
        position += UInt64(count)
      }
      try backing.flush()
      if !d { try top.unmapAll() }
      print("Image committed.")
    } catch let error as ExitCode {
      throw error
    } catch {
      throw imgFailure("Could not commit '\(filename)': \(error)")
    }
  }
}
