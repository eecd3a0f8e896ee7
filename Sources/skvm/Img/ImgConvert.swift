import ArgumentParser
import DiskImage
import Dispatch
import Glibc
import SwiftKVM
import Synchronization
import TextFormat

/// `skvm img convert [-f FMT] [-O FMT] [-c] [-p] [-o OPTIONS] SOURCE OUTPUT`: copies the guest-visible
/// contents; all-zero stretches are left unallocated (sparse raw files, unallocated qcow2 clusters).
struct ImgConvert: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "convert", abstract: "Convert an image to another format (qemu-img convert).")

  @Option(name: .short, help: "Source format (detected when left out).")
  var f: DiskImageFormat?

  @Option(name: .customShort("O"), help: "Output format: raw (default) or qcow2.")
  var outputFormat: DiskImageFormat = .raw

  @Flag(
    name: .customShort("U"),
    help: "Force share: read an image another process has open for writing (it may change meanwhile).")
  var forceShare = false

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
    do { input = try DiskImage.open(source, format: f, forceShare: forceShare) } catch {
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

  /// Copies 1 MiB windows with `convertWorkers` threads, each reading its windows while the
  /// others write; chunks of `cluster` bytes that are all zeros are skipped, leaving holes
  /// (raw) or unallocated clusters (qcow2). qcow2 output is written in guest order (as
  /// qemu-img does without -W), so its clusters are allocated in order; raw output is
  /// written as it comes.
  private func copy(from input: any BlockBackend, to output: any BlockBackend, chunk cluster: Int) throws {
    let size = input.size
    let window = max(cluster, 1 << 20) / cluster * cluster
    let windows = Int((size + UInt64(window) - 1) / UInt64(window))
    let workers = max(1, min(Self.convertWorkers, windows))
    let ordered = output is QCow2Image
    let turns = (0..<workers).map { _ in DispatchSemaphore(value: 0) }
    let shared = CopyState()
    let compress = c
    let progress = p
    @Sendable func copyWindows(_ worker: Int) {
      var buffer = [UInt8](repeating: 0, count: window)
      for index in stride(from: worker, to: windows, by: workers) {
        let offset = UInt64(index) * UInt64(window)
        let count = Int(min(UInt64(window), size - offset))
        buffer.withUnsafeMutableBytes { whole in
          let view = UnsafeMutableRawBufferPointer(rebasing: whole[0..<count])
          var readError: (any Error)?
          if shared.failure.withLock({ $0 == nil }) {
            do { try input.read(into: view, at: offset) } catch { readError = error }
          }
          if ordered && index > 0 { turns[worker].wait() }
          defer { if ordered { turns[(worker + 1) % workers].signal() } }
          do {
            if let readError { throw readError }
            guard shared.failure.withLock({ $0 == nil }) else { return }
            try Self.writeNonZeroRuns(view, at: offset, cluster: cluster, compress: compress, to: output)
          } catch {
            shared.failure.withLock { $0 = $0 ?? error }
          }
        }
        if progress {
          let percent = Int((offset + UInt64(count)) * 100 / max(size, 1))
          shared.shown.withLock { last in
            if percent > last {
              last = percent
              showProgress(cFormat("    (%.2f/100%%)\r", Double(percent)))
            }
          }
        }
      }
    }
    var threads: [OSThread] = []
    for worker in 1..<workers {
      if let thread = try? OSThread(name: "convert\(worker)", { copyWindows(worker) }) {
        threads.append(thread)
      } else {
        // Without its thread this worker's windows would never be written: do them here after.
        shared.failure.withLock {
          $0 = $0 ?? DiskImageError.invalid(path: destination, reason: "could not start a copy thread")
        }
      }
    }
    copyWindows(0)
    for thread in threads { thread.join() }
    if let error = shared.failure.withLock({ $0 }) { throw error }
    if p { showProgress("\n") }
  }

  /// Threads copying at once (qemu-img convert keeps 8 requests in flight by default).
  static let convertWorkers = 4

  /// Writes the runs of non-zero `cluster`-sized chunks of `view` (taken from guest offset
  /// `offset`); with `compress`, full clusters go out compressed (qcow2).
  private static func writeNonZeroRuns(
    _ view: UnsafeMutableRawBufferPointer, at offset: UInt64, cluster: Int, compress: Bool, to output: any BlockBackend
  ) throws {
    let count = view.count
    var start = 0
    while start < count {
      let end = min(start + cluster, count)
      guard !isAllZero(UnsafeRawBufferPointer(rebasing: view[start..<end])) else {
        start = end
        continue
      }
      if compress, end - start == cluster, let qcow2 = output as? QCow2Image {
        let position = offset + UInt64(start)
        try qcow2.writeCompressed(cluster: position / UInt64(cluster), Array(view[start..<end]))
        start = end
        continue
      }
      // Runs of non-zero clusters go out in one write (the image allocates them together).
      var runEnd = end
      while runEnd < count {
        let next = min(runEnd + cluster, count)
        if isAllZero(UnsafeRawBufferPointer(rebasing: view[runEnd..<next])) { break }
        runEnd = next
      }
      try output.write(UnsafeRawBufferPointer(rebasing: view[start..<runEnd]), at: offset + UInt64(start))
      start = runEnd
    }
  }
}

/// What the copy threads share: the first error, and the last progress shown.
private final class CopyState: Sendable {
  let failure = Mutex<(any Error)?>(nil)
  let shown = Mutex(-1)
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
