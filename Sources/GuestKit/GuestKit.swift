import CKVM
import Glibc

/// The default guest: Debian's cloud kernel and a busybox initramfs, built from Debian
/// packages (`apt-get download`) and cached by package versions.
///
/// The cache lives in `$XDG_CACHE_HOME/skvm/kit` (else `~/.cache/skvm/kit`); a second call
/// with the same package versions builds nothing.
public struct GuestKit: Sendable {
  /// The kernel (bzImage).
  public let kernelPath: String
  /// The gzip'd newc initramfs.
  public let initrdPath: String
  /// What was used, e.g. "linux-image-6.1.0-56-cloud-amd64 6.1.192-2, busybox-static 1:1.35.0-4".
  public let description: String

  /// The command line the default guest boots with.
  public static let defaultCommandLine = defaultCommandLine(console: "ttyS0")

  /// The default guest's command line with its console on `console` (ttyS0, hvc0).
  public static func defaultCommandLine(console: String) -> String { "console=\(console) quiet panic=-1" }
  /// The kernel metapackage the default guest follows.
  public static let kernelMetapackage = "linux-image-cloud-amd64"
  /// Modules loaded at boot, with their dependencies put first (virtio_scsi, sr_mod and
  /// isofs: the CD-ROM drive and what is on it).
  static let modules = [
    "pvpanic-mmio", "virtio_pci", "virtio_blk", "virtio_net", "virtio_console", "virtio-rng", "button", "evdev",
    "virtio_scsi", "sr_mod", "isofs",
  ]

  /// Why the kit could not be made.
  public struct Failure: Error, CustomStringConvertible {
    public let description: String
  }

  /// The cache directory for kits.
  public static var cacheRoot: String {
    let environment = ProcessEnvironment()
    if let base = environment["XDG_CACHE_HOME"], !base.isEmpty { return base + "/skvm/kit" }
    return (environment["HOME"] ?? "/root") + "/.cache/skvm/kit"
  }

  /// Returns the kit, building it first when the cache has none for the current package versions.
  /// `log` receives progress lines.
  public static func prepare(log: (String) -> Void = { _ in }) throws(Failure) -> GuestKit {
    // Fast path: the kit resolved last time, if apt's package lists have not changed since.
    // (Asking apt-cache for versions costs about a second per query, far more in an emulator.)
    let stamp = aptListsStamp() + " " + contentKey
    let record = cacheRoot + "/current"
    if let saved = try? Files.read(record) {
      let lines = String(decoding: saved, as: UTF8.self).split(separator: "\n").map(String.init)
      if lines.count == 4, lines[0] == stamp, Files.exists(lines[1]), Files.exists(lines[2]) {
        return GuestKit(kernelPath: lines[1], initrdPath: lines[2], description: lines[3])
      }
    }
    let kit = try resolve(log: log)
    try? Files.writeAtomically(
      Array([stamp, kit.kernelPath, kit.initrdPath, kit.description].joined(separator: "\n").utf8), to: record)
    return kit
  }

  /// When apt's package lists last changed (`apt-get update` renames files into the directory).
  static func aptListsStamp() -> String {
    var status = stat()
    guard stat("/var/lib/apt/lists", &status) == 0 else { return "none" }
    return "\(status.st_mtim.tv_sec).\(status.st_mtim.tv_nsec)"
  }

  /// A hash of what the kit is made of besides the packages (the init script, the module
  /// list): a change to either makes a new kit.
  static let contentKey: String = {
    var hash: UInt64 = 0xcbf2_9ce4_8422_2325
    for byte in (InitScript.text + InitScript.powerButtonAction + InitScript.dhcpHook + modules.joined()).utf8 {
      hash = (hash ^ UInt64(byte)) &* 0x100_0000_01b3
    }
    return String(hash, radix: 16)
  }()

  private static func resolve(log: (String) -> Void) throws(Failure) -> GuestKit {
    do {
      let kernelPackage = try dependency(of: kernelMetapackage)
      let kernelVersion = try candidateVersion(kernelPackage)
      let busyboxVersion = try candidateVersion("busybox-static")
      let key = "\(kernelPackage)_\(kernelVersion)+busybox_\(busyboxVersion)+\(contentKey)"
        .map { $0.isLetter || $0.isNumber || "._+-".contains($0) ? $0 : "_" }
      let directory = cacheRoot + "/" + String(key)
      let kit = GuestKit(
        kernelPath: directory + "/vmlinuz", initrdPath: directory + "/initrd.gz",
        description: "\(kernelPackage) \(kernelVersion), busybox-static \(busyboxVersion)")
      if Files.exists(kit.kernelPath) && Files.exists(kit.initrdPath) { return kit }
      try Files.makeDirectories(cacheRoot)
      log("skvm: building the default guest (\(kit.description)) in \(directory)")
      try build(kit, directory: directory, kernelPackage: kernelPackage)
      return kit
    } catch let error as Failure {
      throw error
    } catch {
      throw Failure(description: "building the default guest: \(error)")
    }
  }

  /// As root, apt downloads as its sandbox user `_apt`, which cannot reach a work directory under
  /// root's home; apt then warns and downloads as root anyway. Say so up front, without the warning.
  private static var aptSandboxOptions: [String] {
    geteuid() == 0 ? ["-o", "APT::Sandbox::User=root"] : []
  }

  private static func build(_ kit: GuestKit, directory: String, kernelPackage: String) throws {
    try Files.makeDirectories(directory)
    let work = directory + ".work-\(getpid())"
    try Files.makeDirectories(work)
    defer { _ = try? HostCommand.run(["rm", "-rf", work]) }
    try HostCommand.run(
      ["apt-get", "download", "-q"] + aptSandboxOptions + [kernelPackage, "busybox-static"], in: work)
    let tree = work + "/tree"
    for deb in Files.list(work) where deb.hasSuffix(".deb") {
      try HostCommand.run(["dpkg-deb", "-x", work + "/" + deb, tree])
    }
    guard let image = Files.list(tree + "/boot").first(where: { $0.hasPrefix("vmlinuz-") }) else {
      throw Failure(description: "\(kernelPackage) has no boot/vmlinuz-*")
    }
    let release = String(image.dropFirst("vmlinuz-".count))
    let moduleRoot = tree + "/lib/modules/" + release
    let order = try ModuleOrder.resolve(modules, in: moduleRoot)

    var archive = CPIOArchive()
    for directory in [
      "bin", "sbin", "usr", "usr/bin", "usr/sbin", "dev", "proc", "sys", "tmp", "root", "etc",
      "etc/acpi", "etc/acpi/PWRF", "lib", "lib/modules",
    ] {
      archive.addDirectory(directory)
    }
    archive.addCharacterDevice("dev/console", major: 5, minor: 1)
    archive.addFile("bin/busybox", content: try Files.read(tree + "/bin/busybox"), mode: 0o755)
    archive.addFile("init", content: Array(InitScript.text.utf8), mode: 0o755)
    archive.addFile("etc/acpi/PWRF/00000080", content: Array(InitScript.powerButtonAction.utf8), mode: 0o755)
    archive.addFile("etc/udhcpc.script", content: Array(InitScript.dhcpHook.utf8), mode: 0o755)
    archive.addFile("etc/modules.order", content: Array((order.joined(separator: "\n") + "\n").utf8))
    var made: Set<String> = []
    for module in order {
      let parts = module.split(separator: "/").dropLast()
      for depth in 0..<parts.count {
        let path = parts[...depth].joined(separator: "/")
        if made.insert(path).inserted { archive.addDirectory("lib/modules/" + path) }
      }
      archive.addFile("lib/modules/" + module, content: try Files.read(moduleRoot + "/" + module))
    }
    try Files.writeAtomically(try Gzip.compress(archive.finished()), to: kit.initrdPath)
    try Files.writeAtomically(try Files.read(tree + "/boot/" + image), to: kit.kernelPath)
  }

  /// The package `metapackage` depends on (`apt-cache depends`).
  static func dependency(of metapackage: String) throws -> String {
    let output = try aptCache(["depends", metapackage])
    for line in output.split(separator: "\n") {
      let trimmed = line.drop { $0 == " " }
      if trimmed.hasPrefix("Depends: ") { return String(trimmed.dropFirst("Depends: ".count)) }
    }
    throw Failure(description: "apt knows no package that \(metapackage) depends on; run 'apt-get update'")
  }

  /// The version apt would install of `package`.
  static func candidateVersion(_ package: String) throws -> String {
    let output = try aptCache(["policy", package])
    for line in output.split(separator: "\n") {
      let trimmed = line.drop { $0 == " " }
      if trimmed.hasPrefix("Candidate: "), !trimmed.hasSuffix("(none)") {
        return String(trimmed.dropFirst("Candidate: ".count))
      }
    }
    throw Failure(description: "apt has no candidate version of \(package); run 'apt-get update'")
  }

  /// `apt-cache` with `arguments`, running `apt-get update` once first if apt has no lists and we are root.
  private static func aptCache(_ arguments: [String]) throws -> String {
    let output = try HostCommand.run(["apt-cache"] + arguments)
    if output.contains("Candidate: (none)") || !output.contains(":"), getuid() == 0 {
      try HostCommand.run(["apt-get", "update", "-qq"])
      return try HostCommand.run(["apt-cache"] + arguments)
    }
    return output
  }
}

/// Environment variables, without Foundation.
struct ProcessEnvironment {
  subscript(name: String) -> String? {
    guard let value = getenv(name) else { return nil }
    return String(cString: value)
  }
}
