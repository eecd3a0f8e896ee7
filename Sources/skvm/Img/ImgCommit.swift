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
      guard let top = try DiskImage.open(filename, format: f, writable: !d) as? QCow2Image else {
        throw imgFailure("'\(filename)' is not a qcow2 image with a backing file to commit to")
      }
      try top.commit(keepContents: d)
      print("Image committed.")
    } catch let error as ExitCode {
      throw error
    } catch {
      throw imgFailure("Could not commit '\(filename)': \(error)")
    }
  }
}
