import ArgumentParser
import DiskImage
import TextFormat

/// `skvm img snapshot [-l | -c NAME | -a NAME | -d NAME] FILE`: internal qcow2 snapshots.
struct ImgSnapshot: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "snapshot", abstract: "List, create, apply or delete internal snapshots (qemu-img snapshot).")

  @Flag(
    name: .customShort("U"),
    help: "Force share: read an image another process has open for writing (it may change meanwhile).")
  var forceShare = false

  @Flag(name: .short, help: "List the snapshots.")
  var l = false

  @Option(name: .short, help: "Create a snapshot with this name.")
  var c: String?

  @Option(name: .short, help: "Apply (revert to) this snapshot.")
  var a: String?

  @Option(name: .short, help: "Delete this snapshot.")
  var d: String?

  @Option(name: .short, help: "Format (qcow2).")
  var f: DiskImageFormat?

  @Argument(help: "The image.")
  var filename: String

  func validate() throws {
    guard [l, c != nil, a != nil, d != nil].filter({ $0 }).count == 1 else {
      throw ValidationError("give exactly one of -l, -c, -a, -d")
    }
  }

  func run() throws {
    do {
      guard
        let image = try DiskImage.open(filename, format: f, writable: !l, forceShare: l && forceShare) as? QCow2Image
      else {
        throw imgFailure("only qcow2 images have internal snapshots")
      }
      if let c { try image.createSnapshot(named: c) }
      if let a { try image.applySnapshot(a) }
      if let d { try image.deleteSnapshot(d) }
      if l { print(Self.table(try image.snapshots), terminator: "") }
    } catch let error as ExitCode {
      throw error
    } catch {
      throw imgFailure("Could not \(l ? "list" : "change") snapshots of '\(filename)': \(error)")
    }
  }

  /// qemu-img's snapshot list.
  static func table(_ snapshots: [QCow2Snapshot]) -> String {
    guard !snapshots.isEmpty else { return "" }
    var lines = ["Snapshot list:", "ID        TAG               VM SIZE                DATE     VM CLOCK     ICOUNT"]
    for snapshot in snapshots {
      let date = SnapshotListFormat.date(snapshot.dateSeconds)
      let vmClock = SnapshotListFormat.vmClock(nanoseconds: snapshot.vmClockNanoseconds)
      lines.append(
        snapshot.id.rightPadded(to: 10) + snapshot.name.rightPadded(to: 17)
          + ImageSize.human(snapshot.vmStateSize).leftPadded(to: 8) + " " + date + " " + vmClock + "           ")
    }
    return lines.joined(separator: "\n") + "\n"
  }
}

extension String {
  fileprivate func leftPadded(to width: Int) -> String {
    count >= width ? self : String(repeating: " ", count: width - count) + self
  }
}
