import ArgumentParser
import DiskImage
import JSON

/// `skvm img info [-f FMT] [--output human|json] [--backing-chain] FILE`.
struct ImgInfo: ParsableCommand {
  static let configuration = CommandConfiguration(commandName: "info", abstract: "Describe an image (qemu-img info).")

  @Option(name: .short, help: "Format (detected when left out).")
  var f: DiskImageFormat?

  @Option(help: "human or json.")
  var output: OutputFormat = .human

  @Flag(
    name: .customShort("U"),
    help: "Force share: read an image another process has open for writing (it may change meanwhile).")
  var forceShare = false

  @Flag(name: .customLong("backing-chain"), help: "Describe every image of the backing chain.")
  var backingChain = false

  @Argument(help: "The image.")
  var filename: String

  func run() throws {
    var chain: [ImageInfo] = []
    do {
      var next: (String, DiskImageFormat?)? = (filename, f)
      while let (path, format) = next, chain.count < DiskImage.maximumChainDepth {
        let info = try ImageInfo.read(path, format: format, forceShare: forceShare)
        chain.append(info)
        next =
          backingChain ? info.fullBackingFilename.map { ($0, info.backingFormat.flatMap(DiskImageFormat.init)) } : nil
      }
    } catch {
      throw imgFailure("Could not open '\(filename)': \(error)")
    }
    switch output {
    case .json:
      let objects = chain.map(Self.json)
      printJSON(backingChain ? .array(objects) : objects[0])
    case .human:
      print(chain.map(Self.human).joined(separator: "\n"), terminator: "")
    }
  }

  static func json(_ info: ImageInfo) -> JSONValue {
    var object: [String: JSONValue] = [
      "filename": .string(info.filename), "format": .string(info.format.rawValue),
      "virtual-size": .number(info.virtualSize), "actual-size": .number(info.actualSize),
      "dirty-flag": .bool(info.dirty),
    ]
    if let clusterSize = info.clusterSize { object["cluster-size"] = .number(clusterSize) }
    if let backing = info.backingFilename { object["backing-filename"] = .string(backing) }
    if let full = info.fullBackingFilename { object["full-backing-filename"] = .string(full) }
    if let format = info.backingFormat { object["backing-filename-format"] = .string(format) }
    if !info.snapshots.isEmpty {
      object["snapshots"] = .array(
        info.snapshots.map { snapshot in
          [
            "id": .string(snapshot.id), "name": .string(snapshot.name), "vm-state-size": .number(snapshot.vmStateSize),
            "date-sec": .number(snapshot.dateSeconds), "date-nsec": .number(snapshot.dateNanoseconds),
            "vm-clock-sec": .number(snapshot.vmClockNanoseconds / 1_000_000_000),
            "vm-clock-nsec": .number(snapshot.vmClockNanoseconds % 1_000_000_000),
          ]
        })
    }
    if let compat = info.compat {
      var data: [String: JSONValue] = [
        "compat": .string(compat), "refcount-bits": .number(info.refcountBits), "compression-type": "zlib",
      ]
      if compat == "1.1" {
        data["lazy-refcounts"] = .bool(info.lazyRefcounts)
        data["corrupt"] = .bool(info.corrupt)
        data["extended-l2"] = false
      }
      object["format-specific"] = ["type": "qcow2", "data": .object(data)]
    }
    return .object(object)
  }

  static func human(_ info: ImageInfo) -> String {
    var lines = [
      "image: \(info.filename)", "file format: \(info.format.rawValue)",
      "virtual size: \(ImageSize.human(info.virtualSize)) (\(info.virtualSize) bytes)",
      "disk size: \(ImageSize.human(info.actualSize))",
    ]
    if let clusterSize = info.clusterSize { lines.append("cluster_size: \(clusterSize)") }
    if let backing = info.backingFilename {
      lines.append(
        "backing file: \(backing)"
          + (info.fullBackingFilename != backing ? " (actual path: \(info.fullBackingFilename ?? backing))" : ""))
    }
    if let format = info.backingFormat { lines.append("backing file format: \(format)") }
    if !info.snapshots.isEmpty {
      lines.append("Snapshot list:")
      lines.append("ID        TAG               VM SIZE                DATE     VM CLOCK     ICOUNT")
      for snapshot in info.snapshots { lines.append("\(snapshot.id)         \(snapshot.name)") }
    }
    if let compat = info.compat {
      lines.append("Format specific information:")
      lines.append("    compat: \(compat)")
      lines.append("    compression type: zlib")
      if compat == "1.1" { lines.append("    lazy refcounts: \(info.lazyRefcounts)") }
      lines.append("    refcount bits: \(info.refcountBits)")
      if compat == "1.1" {
        lines.append("    corrupt: \(info.corrupt)")
        lines.append("    extended l2: false")
      }
    }
    return lines.joined(separator: "\n") + "\n"
  }
}

/// qemu-img's --output values.
enum OutputFormat: String, ExpressibleByArgument {
  case human
  case json
}
