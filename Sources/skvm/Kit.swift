import ArgumentParser
import GuestKit

/// `skvm kit`: build (or find in the cache) the default guest and print where it is.
struct Kit: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "kit",
    abstract: "Build the default guest (Debian's cloud kernel and a busybox initramfs) and print its paths.",
    discussion: """
      Downloads linux-image-cloud-amd64's kernel and busybox-static with apt-get download, \
      and builds a gzip'd initramfs whose /init loads the virtio modules, prints \
      SKVM-GUEST-READY and gives a shell on the console. Cached in $XDG_CACHE_HOME/skvm/kit \
      (else ~/.cache/skvm/kit), keyed by package versions.

      --add PROGRAM puts a host program (by path, or found on PATH) into the initramfs with \
      the shared libraries it needs, at its host path: skvm kit --add iperf3 prints an initrd \
      to boot with --initrd.
      """)

  @Option(name: .customLong("add"), help: "A host program to add to the initramfs with its libraries (repeatable).")
  var programs: [String] = []

  func run() throws {
    do {
      let kit = try GuestKit.prepare { printError($0) }
      print("kernel: \(kit.kernelPath)")
      print("initrd: \(try kit.initrd(adding: programs))")
      print("packages: \(kit.description)")
    } catch {
      printError("skvm: \(error)")
      throw ExitCode(1)
    }
  }
}
