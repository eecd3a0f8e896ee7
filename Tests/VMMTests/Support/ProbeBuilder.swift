import Foundation
import Synchronization

/// Builds probe guests (Probes/probes/NAME.c + Probes/runtime) into flat binaries with the
/// Swift toolchain's own clang and lld, and caches them in .build/probes by content hash.
enum ProbeBuilder {
  static let repositoryRoot = URL(fileURLWithPath: #filePath)
    .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
  static let probesDirectory = repositoryRoot.appendingPathComponent("Probes")
  static let cacheDirectory = repositoryRoot.appendingPathComponent(".build/probes")

  static let compileFlags = [
    "-target", "x86_64-unknown-none-elf", "-ffreestanding", "-nostdlib", "-fno-pic", "-fno-pie",
    "-mno-red-zone", "-mgeneral-regs-only", "-fno-stack-protector", "-fno-builtin", "-O2", "-Wall", "-Werror",
  ]

  private static let lock = Mutex<[String: URL]>([:])

  /// The flat binary of probe `name`, built if its sources changed.
  static func binary(_ name: String) throws -> [UInt8] {
    [UInt8](try Data(contentsOf: path(name)))
  }

  /// Where the built flat binary of probe `name` is (inside the repository, so the real-KVM lane sees it too).
  static func path(_ name: String) throws -> URL {
    // One build at a time: tests share the cache.
    try lock.withLock { built in
      if let path = built[name] { return path }
      let path = try build(name)
      built[name] = path
      return path
    }
  }

  /// The directory holding clang, ld.lld and llvm-objcopy: beside swiftc.
  static func toolchainBin() throws -> URL {
    if let explicit = ProcessInfo.processInfo.environment["SKVM_TOOLCHAIN_BIN"] {
      return URL(fileURLWithPath: explicit)
    }
    let path = ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin"
    for directory in path.split(separator: ":") {
      let candidate = URL(fileURLWithPath: String(directory)).appendingPathComponent("swiftc")
      if FileManager.default.isExecutableFile(atPath: candidate.path) {
        return candidate.resolvingSymlinksInPath().deletingLastPathComponent()
      }
    }
    throw ProbeBuildError("swiftc is not on PATH; set SKVM_TOOLCHAIN_BIN to the toolchain's bin directory")
  }

  private static func sources(_ name: String) throws -> [URL] {
    let runtime = probesDirectory.appendingPathComponent("runtime")
    let runtimeFiles = try FileManager.default.contentsOfDirectory(at: runtime, includingPropertiesForKeys: nil)
      .filter { ["c", "S", "h", "ld"].contains($0.pathExtension) }
      .sorted { $0.lastPathComponent < $1.lastPathComponent }
    let probe = probesDirectory.appendingPathComponent("probes/\(name).c")
    guard FileManager.default.fileExists(atPath: probe.path) else { throw ProbeBuildError("no probe named \(name)") }
    return runtimeFiles + [probe]
  }

  private static func build(_ name: String) throws -> URL {
    let files = try sources(name)
    var hash: UInt64 = 0xcbf2_9ce4_8422_2325
    for file in files {
      for byte in Array(file.lastPathComponent.utf8) + [UInt8](try Data(contentsOf: file)) {
        hash = (hash ^ UInt64(byte)) &* 0x100_0000_01b3
      }
    }
    for byte in compileFlags.joined(separator: " ").utf8 { hash = (hash ^ UInt64(byte)) &* 0x100_0000_01b3 }
    let output = cacheDirectory.appendingPathComponent("\(name)-\(String(hash, radix: 16)).bin")
    if FileManager.default.fileExists(atPath: output.path) { return output }

    let bin = try toolchainBin()
    let work = FileManager.default.temporaryDirectory.appendingPathComponent("skvm-probe-\(name)-\(UUID().uuidString)")
    try FileManager.default.createDirectory(at: work, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(at: work) }
    var objects: [String] = []
    for source in files where ["c", "S"].contains(source.pathExtension) {
      let object = work.appendingPathComponent(source.lastPathComponent + ".o").path
      try run(
        bin.appendingPathComponent("clang"),
        compileFlags + ["-I", probesDirectory.appendingPathComponent("runtime").path, "-c", source.path, "-o", object])
      objects.append(object)
    }
    let elf = work.appendingPathComponent("\(name).elf").path
    try run(
      bin.appendingPathComponent("ld.lld"),
      [
        "-T", probesDirectory.appendingPathComponent("runtime/link.ld").path, "--image-base=0", "-static", "-nostdlib",
        "-o", elf,
      ] + objects)
    try FileManager.default.createDirectory(at: cacheDirectory, withIntermediateDirectories: true)
    let temporary = output.path + ".tmp-\(getpid())"
    try run(bin.appendingPathComponent("llvm-objcopy"), ["-O", "binary", elf, temporary])
    guard rename(temporary, output.path) == 0 else { throw ProbeBuildError("llvm-objcopy produced no \(output.path)") }
    return output
  }

  private static func run(_ tool: URL, _ arguments: [String]) throws {
    let process = Process()
    process.executableURL = tool
    process.arguments = arguments
    let errors = Pipe()
    process.standardError = errors
    try process.run()
    let message = errors.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    if process.terminationStatus != 0 {
      throw ProbeBuildError(
        "\(tool.lastPathComponent) failed (\(process.terminationStatus)): \(String(decoding: message, as: UTF8.self))")
    }
  }
}

struct ProbeBuildError: Error, CustomStringConvertible {
  let description: String
  init(_ description: String) { self.description = description }
}
