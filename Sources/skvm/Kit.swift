import ArgumentParser
import GuestKit

/// `skvm kit`: build (or find in the cache) the default guest and print where it is.
struct Kit: ParsableCommand {
  static let configuration = CommandConfiguration(
    abstract: "Build the default guest (Debian's cloud kernel and a busybox initramfs) and print its paths.",
    discussion: """
      Downloads linux-image-cloud-amd64's kernel and busybox-static with apt-get download, \
      and builds a gzip'd initramfs whose /init loads the virtio modules, prints \
      SKVM-GUEST-READY and gives a shell on the console. Cached in $XDG_CACHE_HOME/skvm/kit \
      (else ~/.cache/skvm/kit), keyed by package versions.
      """)

  func run() throws {
    do {
      let kit = try GuestKit.prepare { printError($0) }
      print("kernel: \(kit.kernelPath)")
      print("initrd: \(kit.initrdPath)")
      print("packages: \(kit.description)")
    } catch {
      printError("skvm: \(error)")
      throw ExitCode(1)
    }
  }
}
