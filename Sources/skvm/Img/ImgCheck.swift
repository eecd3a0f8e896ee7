import ArgumentParser
import DiskImage
import JSON
import TextFormat

/// `skvm img check [-f FMT] [-r leaks|all] [--output human|json] FILE`, with qemu-img's
/// exit statuses: 0 clean, 1 the check could not run, 2 corruptions, 3 only leaks, 63 no checks for the format.
struct ImgCheck: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "check", abstract: "Check an image for errors (qemu-img check).")

  @Option(name: .short, help: "Format (detected when left out).")
  var f: DiskImageFormat?

  @Option(name: .short, help: "Repair: leaks (leaked clusters) or all.")
  var r: RepairMode?

  @Option(help: "human or json.")
  var output: OutputFormat = .human

  @Flag(name: .short, help: "Quiet.")
  var q = false

  @Flag(
    name: .customShort("U"), help: "Force share: check an image another process has open (it may change meanwhile).")
  var forceShare = false

  @Argument(help: "The image.")
  var filename: String

  enum RepairMode: String, ExpressibleByArgument {
    case leaks
    case all
  }

  func run() throws {
    let format: DiskImageFormat
    do { format = try f ?? DiskImage.detectFormat(filename) } catch { throw imgFailure("\(error)") }
    guard format == .qcow2 else {
      if !q { print("This image format does not support checks") }
      throw ExitCode(63)
    }
    let image: QCow2Image
    do { image = try DiskImage.openForCheck(filename, writable: r != nil, forceShare: forceShare) } catch {
      throw imgFailure("Could not check '\(filename)': \(error)")
    }
    defer { image.close() }
    // qemu-img check opens the whole chain first: a backing file that cannot be opened
    // (missing, or a name the header garbles) fails the check before it starts.
    if let backing = image.header.backingFile {
      let format = image.header.backingFormat.flatMap { DiskImageFormat(rawValue: $0) }
      do {
        try DiskImage.open(DiskImage.resolve(backing: backing, of: filename), format: format, forceShare: true).close()
      } catch {
        throw imgFailure("Could not open '\(filename)': Could not open backing file: \(error)")
      }
    }
    let result: QCow2CheckResult
    do { result = try image.check(repair: r == .all ? .all : (r == .leaks ? .leaks : .none)) } catch {
      throw imgFailure("Could not check '\(filename)': \(error)")
    }
    report(result)
    if result.exitStatus != 0 { throw ExitCode(result.exitStatus) }
  }

  private func report(_ result: QCow2CheckResult) {
    switch output {
    case .json:
      var object: [String: JSONValue] = [
        "filename": .string(filename), "format": "qcow2", "check-errors": .number(result.checkErrors),
        "image-end-offset": .number(result.imageEndOffset), "total-clusters": .number(result.totalClusters),
        "allocated-clusters": .number(result.allocatedClusters),
        "fragmented-clusters": .number(result.fragmentedClusters),
        "compressed-clusters": .number(result.compressedClusters),
      ]
      if result.corruptions > 0 { object["corruptions"] = .number(result.corruptions) }
      if result.leaks > 0 { object["leaks"] = .number(result.leaks) }
      if result.leaksFixed > 0 { object["leaks-fixed"] = .number(result.leaksFixed) }
      if result.corruptionsFixed > 0 { object["corruptions-fixed"] = .number(result.corruptionsFixed) }
      printJSON(.object(object))
    case .human:
      guard !q else { return }
      for message in result.messages { print(message) }
      if result.leaksFixed + result.corruptionsFixed > 0 {
        print(
          "The following inconsistencies were found and repaired:\n\n    \(result.leaksFixed) leaked clusters\n"
            + "    \(result.corruptionsFixed) corruptions\n")
        print("Double checking the fixed image now...")
      }
      if result.corruptions > 0 {
        print("\n\(result.corruptions) errors were found on the image.")
        print("Data may be corrupted, or further writes to the image may corrupt it.")
      }
      if result.leaks > 0 {
        print("\n\(result.leaks) leaked clusters were found on the image.")
        print("This means waste of disk space, but no harm to data.")
      }
      if result.corruptions == 0 && result.leaks == 0 { print("No errors were found on the image.") }
      // As qemu-img prints them: allocated of all clusters, fragmented and compressed of allocated ones.
      func percent(_ value: UInt64, of total: UInt64) -> String {
        cFormat("%.2f%%", total == 0 ? 0 : Double(value) * 100 / Double(total))
      }
      let allocated = result.allocatedClusters
      print(
        "\(allocated)/\(result.totalClusters) = \(percent(allocated, of: result.totalClusters)) allocated, "
          + "\(percent(result.fragmentedClusters, of: allocated)) fragmented, "
          + "\(percent(result.compressedClusters, of: allocated)) compressed clusters")
      print("Image end offset: \(result.imageEndOffset)")
    }
  }
}
