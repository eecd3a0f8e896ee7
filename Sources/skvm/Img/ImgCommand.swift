import ArgumentParser
import DiskImage
import JSON
import TextFormat

/// `skvm img`: disk images, with qemu-img's verbs, flags and output.
struct ImgCommand: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "img",
    abstract: "Create, inspect, check and convert disk images (raw, qcow2), as qemu-img does.",
    subcommands: [
      ImgCreate.self, ImgInfo.self, ImgCheck.self, ImgConvert.self, ImgCompare.self, ImgMap.self, ImgResize.self,
      ImgRebase.self, ImgCommit.self, ImgMeasure.self, ImgSnapshot.self, ImgBench.self,
    ])
}

/// Parses qemu-img sizes: a number with an optional k, M, G, T, P or E suffix (powers of 1024).
enum ImageSize {
  static func parse(_ text: String) throws -> UInt64 {
    let units: [Character: UInt64] = [
      "b": 1, "k": 1 << 10, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40,
      "P": 1 << 50, "E": 1 << 60,
    ]
    var digits = Substring(text)
    var multiplier: UInt64 = 1
    if let last = text.last, !last.isNumber {
      guard let unit = units[last] else {
        throw ValidationError(
          "invalid size '\(text)': use a number with an optional k, M, G, T, P or E suffix (e.g. 10G)")
      }
      multiplier = unit
      digits = digits.dropLast()
    }
    guard let value = UInt64(digits), value.multipliedReportingOverflow(by: multiplier).overflow == false else {
      throw ValidationError(
        "invalid size '\(text)': use a number with an optional k, M, G, T, P or E suffix (e.g. 10G)")
    }
    return value * multiplier
  }

  /// "64 MiB" as qemu-img prints sizes.
  static func human(_ bytes: UInt64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"]
    var value = Double(bytes)
    var unit = 0
    while value >= 1024 && unit < units.count - 1 {
      value /= 1024
      unit += 1
    }
    if unit == 0 { return "\(bytes) B" }
    let text = cFormat(value < 10 ? "%.3g" : "%.4g", value)
    return "\(text) \(units[unit])"
  }
}

/// Fails a command with qemu-img's style: "skvm img: <message>", status 1.
func imgFailure(_ message: String) -> ExitCode {
  printError("skvm img: \(message)")
  return ExitCode(1)
}

extension DiskImageFormat: ExpressibleByArgument {}

/// Writes JSON as qemu-img does: indented, members sorted by key.
func printJSON(_ value: JSONValue) {
  print(value.prettyText)
}

/// qemu-img's `-o key=value,...` options (the flag may repeat), in order.
func imageOptions(_ groups: [String]) -> [(key: String, value: String)] {
  groups.flatMap { $0.split(separator: ",") }.map { option in
    let pair = option.split(separator: "=", maxSplits: 1).map(String.init)
    return (pair.first ?? "", pair.count == 2 ? pair[1] : "")
  }
}

/// Applies one qcow2 creation option; false when `key` is not one.
func applyQCow2Option(_ key: String, _ value: String, to options: inout QCow2CreateOptions) throws -> Bool {
  switch key {
  case "cluster_size": options.clusterSize = try ImageSize.parse(value)
  case "compat": options.compat = value
  case "lazy_refcounts": options.lazyRefcounts = value == "on"
  case "refcount_bits":
    guard let bits = UInt32(value) else { throw imgFailure("refcount_bits '\(value)' is not a number") }
    options.refcountBits = bits
  case "preallocation":
    guard let mode = QCow2Preallocation(rawValue: value) else {
      throw imgFailure("invalid preallocation '\(value)': use off, metadata, falloc or full")
    }
    options.preallocation = mode
  default: return false
  }
  return true
}

extension String {
  /// Cut or padded with spaces to exactly `width` characters, as qemu-img lays out its columns.
  func rightPadded(to width: Int) -> String {
    count >= width ? String(prefix(width)) : self + String(repeating: " ", count: width - count)
  }
}
