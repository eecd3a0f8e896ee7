import ArgumentParser
import DiskImage

/// `skvm img map [-f FMT] [--output human|json] FILE`: where each range of the image lives.
struct ImgMap: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "map", abstract: "Show the allocation map of an image and its backing chain (qemu-img map).")

  @Option(name: .short, help: "Format (detected when left out).")
  var f: DiskImageFormat?

  @Option(help: "human or json.")
  var output: OutputFormat = .human

  @Flag(
    name: .customShort("U"),
    help: "Force share: read an image another process has open for writing (it may change meanwhile).")
  var forceShare = false

  @Argument(help: "The image.")
  var filename: String

  func run() throws {
    let entries: [MapEntry]
    do {
      entries = try DiskImage.map(try DiskImage.open(filename, format: f, forceShare: forceShare))
    } catch {
      throw imgFailure("Could not map '\(filename)': \(error)")
    }
    switch output {
    case .json:
      // qemu-img's own layout: one object per line, fields in a fixed order.
      let lines = entries.map { entry in
        var line =
          "{ \"start\": \(entry.start), \"length\": \(entry.length), \"depth\": \(entry.depth), "
          + "\"present\": \(entry.present), \"zero\": \(entry.zero), \"data\": \(entry.data)"
        if let offset = entry.offset { line += ", \"offset\": \(offset)" }
        return line + "}"
      }
      print("[" + lines.joined(separator: ",\n") + "]")
    case .human:
      print("Offset          Length          Mapped to       File")
      for entry in entries where entry.data {
        guard let offset = entry.offset else { continue }
        print(
          hex(entry.start).rightPadded(to: 16) + hex(entry.length).rightPadded(to: 16)
            + hex(offset).rightPadded(to: 16) + entry.filename)
      }
    }
  }

  private func hex(_ value: UInt64) -> String { "0x" + String(value, radix: 16) }
}
