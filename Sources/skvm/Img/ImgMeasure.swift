import ArgumentParser
import DiskImage
import JSON

/// `skvm img measure [-O FMT] [-o cluster_size=,refcount_bits=] (--size SIZE | [-f FMT] FILE) [--output human|json]`.
struct ImgMeasure: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "measure", abstract: "How much space an image would need (qemu-img measure).")

  @Option(name: .customShort("O"), help: "Output format: raw or qcow2 (default).")
  var outputFormat: DiskImageFormat = .qcow2

  @Option(name: .short, help: "Output options: cluster_size=, refcount_bits=.")
  var o: [String] = []

  @Option(help: "Measure a new image of this size instead of an existing one.")
  var size: String?

  @Option(name: .short, help: "Format of the image measured.")
  var f: DiskImageFormat?

  @Option(help: "human or json.")
  var output: OutputFormat = .human

  @Argument(help: "The image to measure.")
  var filename: String?

  func run() throws {
    var options = QCow2CreateOptions(size: 0)
    for (key, value) in imageOptions(o) where try !applyQCow2Option(key, value, to: &options) {
      throw imgFailure("invalid option '\(key)'")
    }
    let clusterSize = options.clusterSize
    let refcountBits = options.refcountBits
    let virtualSize: UInt64
    var allocated: UInt64 = 0
    switch (size, filename) {
    case (let text?, nil):
      virtualSize = try ImageSize.parse(text)
    case (nil, let path?):
      do {
        let image = try DiskImage.open(path, format: f)
        virtualSize = image.size
        allocated = try DiskImage.map(image).filter { $0.data && !$0.zero }.reduce(0) { $0 + $1.length }
      } catch {
        throw imgFailure("Could not open '\(path)': \(error)")
      }
    default:
      throw imgFailure("Either --size N or one filename must be specified.")
    }
    let required: UInt64
    let full: UInt64
    if outputFormat == .raw {
      full = virtualSize
      required = filename == nil ? virtualSize : virtualSize
    } else {
      full = QCow2Measure.fullyAllocatedSize(size: virtualSize, clusterSize: clusterSize, refcountBits: refcountBits)
      let aligned = (virtualSize + clusterSize - 1) / clusterSize * clusterSize
      required = full - aligned + allocated
    }
    switch output {
    case .json:
      var object: [String: JSONValue] = ["required": .number(required), "fully-allocated": .number(full)]
      if outputFormat == .qcow2 && filename != nil { object["bitmaps"] = 0 }
      printJSON(.object(object))
    case .human:
      print("required size: \(required)")
      print("fully allocated size: \(full)")
      if outputFormat == .qcow2 && filename != nil { print("bitmaps size: 0") }
    }
  }
}
