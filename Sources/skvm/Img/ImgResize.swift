import ArgumentParser
import DiskImage
import Glibc

/// `skvm img resize [-f FMT] [--shrink] FILE [+|-]SIZE`.
struct ImgResize: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "resize", abstract: "Change an image's virtual size (qemu-img resize).")

  @Option(name: .short, help: "Format (detected when left out).")
  var f: DiskImageFormat?

  @Flag(help: "Allow making the image smaller (data past the new end is lost).")
  var shrink = false

  @Argument(help: "The image.")
  var filename: String

  @Argument(help: "New size, or +SIZE / -SIZE relative to the current one.")
  var size: String

  func run() throws {
    let image: any BlockBackend
    do { image = try DiskImage.open(filename, format: f, writable: true) } catch {
      throw imgFailure("Could not open '\(filename)': \(error)")
    }
    let current = image.size
    let newSize: UInt64
    do {
      if size.hasPrefix("+") {
        newSize = current + (try ImageSize.parse(String(size.dropFirst())))
      } else if size.hasPrefix("-") {
        let delta = try ImageSize.parse(String(size.dropFirst()))
        guard delta <= current else { throw imgFailure("Image size cannot be negative") }
        newSize = current - delta
      } else {
        newSize = try ImageSize.parse(size)
      }
    } catch let error as ExitCode {
      throw error
    } catch {
      throw imgFailure("\(error)")
    }
    if newSize < current && !shrink {
      throw imgFailure(
        "Use the --shrink option to perform a shrink operation (it loses the data past \(newSize) bytes)")
    }
    do {
      if let qcow2 = image as? QCow2Image {
        try qcow2.resize(to: newSize)
      } else if let raw = image as? RawImage {
        try raw.resize(to: newSize)
      }
    } catch {
      throw imgFailure("\(filename): \(error)")
    }
    print("Image resized.")
  }
}
