import ArgumentParser
import DiskImage
import Glibc

/// `skvm img convert [-f FMT] [-O FMT] [-c] [-p] [-o OPTIONS] SOURCE OUTPUT`: copies the guest-visible
/// contents; all-zero stretches are left unallocated (sparse raw files, unallocated qcow2 clusters).
struct ImgConvert: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "convert", abstract: "Convert an image to another format (qemu-img convert).")

  @Option(name: .short, help: "Source format (detected when left out).")
  var f: DiskImageFormat?

  @Option(name: .customShort("O"), help: "Output format: raw (default) or qcow2.")
  var outputFormat: DiskImageFormat = .raw

  @Flag(name: .short, help: "Compress the output (qcow2).")
  var c = false

  @Flag(name: .short, help: "Show progress.")
  var p = false

  @Option(name: .short, help: "Output options: cluster_size=, compat=, refcount_bits=, lazy_refcounts=.")
  var o: [String] = []

  @Argument(help: "The source image.")
  var source: String

  @Argument(help: "The image to write.")
  var destination: String

  func run() throws {
    if c && outputFormat != .qcow2 { throw imgFailure("compression needs -O qcow2") }
    let input: any BlockBackend
    do { input = try DiskImage.open(source, format: f) } catch {
      throw imgFailure("Could not open '\(source)': \(error)")
    }
    var options = QCow2CreateOptions(size: input.size)
    for group in o {
      for option in group.split(separator: ",") {
        let pair = option.split(separator: "=", maxSplits: 1).map(String.init)
        let value = pair.count == 2 ? pair[1] : ""
        switch pair[0] {
        case "cluster_size": options.clusterSize = try ImageSize.parse(value)
        case "compat": options.compat = value
        case "lazy_refcounts": options.lazyRefcounts = value == "on"
        case "refcount_bits": options.refcountBits = UInt32(value) ?? 0
        default: throw imgFailure("invalid option '\(pair[0])' for format \(outputFormat.rawValue)")
        }
      }
    }
    do {
      let output: any BlockBackend
      switch outputFormat {
      case .raw:
        let fd = open(destination, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        guard fd >= 0, ftruncate(fd, off_t(input.size)) == 0 else {
          throw DiskImageError.io(path: destination, operation: "create", errno: errno)
        }
        close(fd)
        output = try RawImage(path: destination, readOnly: false)
      case .qcow2:
        let qcow2 = try QCow2Image.create(at: destination, options: options)
        // As qemu-img convert's default cache=unsafe: a failed conversion is discarded anyway;
        // the final flush makes the result durable.
        qcow2.metadataOrdering = .processCrash
        output = qcow2
      }
      try copy(from: input, to: output, chunk: Int(outputFormat == .qcow2 ? options.clusterSize : 1 << 20))
      try output.flush()
    } catch let error as ExitCode {
      throw error
    } catch {
      throw imgFailure("error while converting \(source) to \(destination): \(error)")
    }
  }

  private func copy(from input: any BlockBackend, to output: any BlockBackend, chunk: Int) throws {
    let size = input.size
    var offset: UInt64 = 0
    var lastShown = -1
    while offset < size {
      let count = Int(min(UInt64(chunk), size - offset))
      let bytes = try input.read(count: count, at: offset)
      if bytes.contains(where: { $0 != 0 }) {
        if c, count == chunk, let qcow2 = output as? QCow2Image {
          try qcow2.writeCompressed(cluster: offset / UInt64(chunk), bytes)
        } else {
          try output.write(bytes, at: offset)
        }
      }
      offset += UInt64(count)
      if p {
        let percent = Int(offset * 100 / max(size, 1))
        if percent != lastShown {
          lastShown = percent
          showProgress(String(format: "    (%.2f/100%%)\r", Double(percent)))
        }
      }
    }
    if p { showProgress("\n") }
  }
}

/// Writes a progress line to standard error as it is (no newline added), like qemu-img -p.
private func showProgress(_ text: String) {
  var text = text
  text.withUTF8 { bytes in _ = write(STDERR_FILENO, bytes.baseAddress, bytes.count) }
}
