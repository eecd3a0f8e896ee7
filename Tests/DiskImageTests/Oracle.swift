import Foundation

/// The real qemu-img and qemu-io (Debian qemu-utils), the oracle our images are checked against.
enum Oracle {
  struct Failure: Error, CustomStringConvertible { let description: String }

  static var available: Bool { FileManager.default.isExecutableFile(atPath: "/usr/bin/qemu-img") }

  /// Runs a tool; throws with its output when it fails.
  @discardableResult
  static func run(_ tool: String, _ arguments: [String]) throws -> String {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: "/usr/bin/" + tool)
    process.arguments = arguments
    let output = Pipe()
    process.standardOutput = output
    process.standardError = output
    try process.run()
    let data = output.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    let text = String(decoding: data, as: UTF8.self)
    guard process.terminationStatus == 0 else {
      throw Failure(description: "\(tool) \(arguments.joined(separator: " ")) failed: \(text)")
    }
    return text
  }

  /// A fresh scratch directory, removed by the caller.
  static func scratch() throws -> URL {
    let url = FileManager.default.temporaryDirectory.appendingPathComponent("skvm-img-\(UUID().uuidString)")
    try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
    return url
  }

  /// What qemu-img says the guest sees: the image converted to raw.
  static func rawContents(of path: String) throws -> Data {
    let raw = path + ".oracle.raw"
    defer { try? FileManager.default.removeItem(atPath: raw) }
    try run("qemu-img", ["convert", "-O", "raw", path, raw])
    return try Data(contentsOf: URL(fileURLWithPath: raw))
  }
}
