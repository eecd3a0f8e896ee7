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
      try image.rebase(onto: b.isEmpty ? nil : b, format: backingFormat, unsafe: u)
    } catch let error as ExitCode {
      throw error
    } catch {
      throw imgFailure("Could not rebase '\(filename)': \(error)")
    }
  }
}
