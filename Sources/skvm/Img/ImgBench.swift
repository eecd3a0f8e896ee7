import ArgumentParser
import DiskImage
import Glibc
import TextFormat

/// `skvm img bench [-c COUNT] [-s SIZE] [-S STEP] [-w] [--random] [-f FMT] FILE`: timed I/O through
/// the image library, as qemu-img bench does (one request at a time, sequential unless --random).
struct ImgBench: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "bench", abstract: "Time reads or writes through the image library (qemu-img bench).")

  @Option(name: .short, help: "Number of requests.")
  var c: Int = 75000

  @Option(name: .short, help: "Request size (default 4K).")
  var s: String = "4K"

  @Option(name: .customShort("S"), help: "Distance between requests (default: the request size).")
  var step: String?

  @Option(name: .short, help: "Offset of the first request.")
  var o: String = "0"

  @Flag(name: .short, help: "Write instead of read.")
  var w = false

  @Flag(help: "Random, request-aligned offsets instead of sequential ones.")
  var random = false

  @Flag(help: "Flush after every write (for crash tests).")
  var flushEach = false

  @Option(name: .short, help: "Format (detected when left out).")
  var f: DiskImageFormat?

  @Option(
    name: .short,
    help: "Cache mode: writeback (default) or unsafe order metadata writes; none syncs between them (power-loss safe).")
  var t: String = "writeback"

  @Argument(help: "The image.")
  var filename: String

  func run() throws {
    let size = Int(try ImageSize.parse(s))
    let stepSize = try step.map(ImageSize.parse) ?? UInt64(size)
    var offset = try ImageSize.parse(o)
    let image: any BlockBackend
    do { image = try DiskImage.open(filename, format: f, writable: w) } catch {
      throw imgFailure("Could not open '\(filename)': \(error)")
    }
    if let qcow2 = image as? QCow2Image { qcow2.metadataOrdering = t == "none" ? .powerLoss : .processCrash }
    guard image.size >= UInt64(size) else { throw imgFailure("the image is smaller than one request") }
    print(
      "Sending \(c) \(w ? "write" : "read") requests, \(size) bytes each, \(random ? "at random offsets" : "sequentially")"
    )
    var buffer = [UInt8](repeating: w ? 0xA5 : 0, count: size)
    var generator = SystemRandomNumberGenerator()
    let slots = image.size / UInt64(size)
    var start = timespec()
    clock_gettime(CLOCK_MONOTONIC, &start)
    do {
      for request in 0..<c {
        if random { offset = UInt64.random(in: 0..<slots, using: &generator) * UInt64(size) }
        if offset + UInt64(size) > image.size { offset = 0 }
        if w {
          buffer[0] = UInt8(truncatingIfNeeded: request)
          try image.write(buffer, at: offset)
          if flushEach { try image.flush() }
        } else {
          var failure: DiskImageError?
          buffer.withUnsafeMutableBytes { bytes in
            do throws(DiskImageError) { try image.read(into: bytes, at: offset) } catch { failure = error }
          }
          if let failure { throw failure }
        }
        if !random { offset += stepSize }
      }
      if w { try image.flush() }
    } catch {
      throw imgFailure("\(filename): \(error)")
    }
    var end = timespec()
    clock_gettime(CLOCK_MONOTONIC, &end)
    let seconds = Double(end.tv_sec - start.tv_sec) + Double(end.tv_nsec - start.tv_nsec) / 1e9
    print(cFormat("Run completed in %.3f seconds (%.0f requests/s).", seconds, Double(c) / seconds))
  }
}
