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

  @Option(
    name: .short,
    help: "Output cache mode: unsafe (default, as qemu-img: nothing is synced), writeback or none (synced at the end).")
  var t: String = "unsafe"

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
    for (key, value) in imageOptions(o) where try !applyQCow2Option(key, value, to: &options) {
      throw imgFailure("invalid option '\(key)' for format \(outputFormat.rawValue)")
    }
    do {
      let output: any BlockBackend
      switch outputFormat {
      case .raw:
        output = try RawImage.create(at: destination, size: input.size)
      case .qcow2:
        let qcow2 = try QCow2Image.create(at: destination, options: options)
        // As qemu-img convert's default cache=unsafe: a failed conversion is discarded anyway;
        // with -t writeback or none, the final flush makes the result durable.
        qcow2.metadataOrdering = .processCrash
        output = qcow2
      }
      try copy(from: input, to: output, chunk: Int(outputFormat == .qcow2 ? options.clusterSize : 1 << 20))
      if t != "unsafe" { try output.flush() }
    } catch let error as ExitCode {
      throw error
    } catch {
      throw imgFailure("error while converting \(source) to \(destination): \(error)")
    }
  }

  /// Copies in chunks of `cluster` bytes read 1 MiB at a time into one reused buffer;
  /// chunks of zeros are skipped, leaving holes (raw) or unallocated clusters (qcow2).
  private func copy(from input: any BlockBackend, to output: any BlockBackend, chunk cluster: Int) throws {
    let size = input.size
    let window = max(cluster, 1 << 20) / cluster * cluster
    var buffer = [UInt8](repeating: 0, count: window)
    var offset: UInt64 = 0
    var lastShown = -1
    while offset < size {
      let count = Int(min(UInt64(window), size - offset))
      var failure: Error?
      buffer.withUnsafeMutableBytes { whole in
        do {
          let view = UnsafeMutableRawBufferPointer(rebasing: whole[0..<count])
          try input.read(into: view, at: offset)
          // Runs of non-zero clusters go out in one write (the image allocates them together).
          var start = 0
          while start < count {
            let end = min(start + cluster, count)
            guard !isAllZero(UnsafeRawBufferPointer(rebasing: view[start..<end])) else {
              start = end
              continue
            }
            if c, end - start == cluster, let qcow2 = output as? QCow2Image {
              let position = offset + UInt64(start)
              try qcow2.writeCompressed(cluster: position / UInt64(cluster), Array(view[start..<end]))
              start = end
              continue
            }
            var runEnd = end
            while runEnd < count {
              let next = min(runEnd + cluster, count)
              if isAllZero(UnsafeRawBufferPointer(rebasing: view[runEnd..<next])) { break }
              runEnd = next
            }
            try output.write(UnsafeRawBufferPointer(rebasing: view[start..<runEnd]), at: offset + UInt64(start))
            start = runEnd
          }
        } catch { failure = error }
      }
      if let failure { throw failure }
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

/// True when every byte is zero (compared eight at a time).
private func isAllZero(_ bytes: UnsafeRawBufferPointer) -> Bool {
  guard let base = bytes.baseAddress else { return true }
  let words = bytes.count / 8
  for index in 0..<words where base.loadUnaligned(fromByteOffset: index * 8, as: UInt64.self) != 0 { return false }
  for index in words * 8..<bytes.count where bytes[index] != 0 { return false }
  return true
}

/// Writes a progress line to standard error as it is (no newline added), like qemu-img -p.
private func showProgress(_ text: String) {
  var text = text
  text.withUTF8 { bytes in _ = write(STDERR_FILENO, bytes.baseAddress, bytes.count) }
}
