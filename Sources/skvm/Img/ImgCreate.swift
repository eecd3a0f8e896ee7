import ArgumentParser
import DiskImage
import Glibc

/// `skvm img create [-f FMT] [-o OPTIONS] [-b BACKING -F FMT] FILE [SIZE]`.
struct ImgCreate: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "create", abstract: "Create a new image (qemu-img create).")

  @Option(name: .short, help: "Format: raw (default) or qcow2.")
  var f: DiskImageFormat = .raw

  @Option(
    name: .short,
    help:
      "Options: cluster_size=, compat=0.10|1.1, lazy_refcounts=on|off, refcount_bits=, backing_file=, backing_fmt=, preallocation=off|metadata|falloc|full."
  )
  var o: [String] = []

  @Option(name: .short, help: "Backing file (qcow2 only).")
  var b: String?

  @Option(name: .customShort("F"), help: "Format of the backing file.")
  var backingFormat: DiskImageFormat?

  @Flag(name: .short, help: "Quiet.")
  var q = false

  @Flag(name: .short, help: "Do not open the backing file to check it (and take its size).")
  var u = false

  @Argument(help: "The image to create.")
  var filename: String

  @Argument(help: "Virtual size, e.g. 10G (from the backing file when left out).")
  var size: String?

  func run() throws {
    var qcow2 = QCow2CreateOptions(size: 0)
    var backing = b
    var backingFmt = backingFormat
    for (key, value) in imageOptions(o) {
      if try applyQCow2Option(key, value, to: &qcow2) { continue }
      switch key {
      case "backing_file": backing = value
      case "backing_fmt":
        guard let format = DiskImageFormat(rawValue: value) else { throw imgFailure("unknown format '\(value)'") }
        backingFmt = format
      default:
        throw imgFailure("invalid option '\(key)' for format \(f.rawValue)")
      }
    }
    var virtualSize: UInt64?
    if let size {
      do { virtualSize = try ImageSize.parse(size) } catch { throw imgFailure("\(error)") }
    }
    if let backing {
      guard f == .qcow2 else { throw imgFailure("backing files need -f qcow2") }
      let resolved = DiskImage.resolve(backing: backing, of: filename)
      if !u || virtualSize == nil {
        do {
          let image = try DiskImage.open(resolved, format: backingFmt)
          if backingFmt == nil { backingFmt = try DiskImage.detectFormat(resolved) }
          virtualSize = virtualSize ?? image.size
        } catch {
          throw imgFailure("Could not open backing image '\(resolved)': \(error)")
        }
      }
    }
    guard let virtualSize else { throw imgFailure("Image creation needs a size parameter") }
    if !q {
      var line = "Formatting '\(filename)', fmt=\(f.rawValue)"
      if f == .qcow2 {
        line += " cluster_size=\(qcow2.clusterSize)"
        if let backing { line += " backing_file=\(backing)" }
        if let backingFmt { line += " backing_fmt=\(backingFmt.rawValue)" }
      }
      line += " size=\(virtualSize)"
      if f == .qcow2 {
        line += " lazy_refcounts=\(qcow2.lazyRefcounts ? "on" : "off") refcount_bits=\(qcow2.refcountBits)"
      }
      print(line)
    }
    do {
      switch f {
      case .raw:
        _ = try RawImage.create(at: filename, size: virtualSize)
      case .qcow2:
        qcow2.size = virtualSize
        qcow2.backingFile = backing
        qcow2.backingFormat = backingFmt
        try QCow2Image.create(at: filename, options: qcow2)
      }
    } catch {
      throw imgFailure("\(filename): \(error)")
    }
  }
}
