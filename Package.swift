// swift-tools-version: 6.1
import PackageDescription

#if canImport(Glibc)
  import Glibc
#endif

/// How `skvm` is linked: by lld, with no symbols exported (nothing looks the executable's
/// symbols up; 6,600 exported ones were pages the loader read and searched at every start),
/// the functions a boot runs placed together (Sources/skvm/LinkOrder.txt, written by
/// scripts/link-order: the kernel maps text 64 KiB around each fault) and, where this glibc
/// reads them (2.36 and later), relative relocations packed (DT_RELR: 8 KiB instead of 1 MiB
/// of relocation records to page in). Peak RSS of a tiny guest 10.7 → 8.9 MiB (issue 17).
/// libstdc++ (which the static Swift runtime needs) is linked statically too: the toolchain
/// asks for `-lstdc++` before any package flag, so `Sources/skvm/StaticCXX` — searched before
/// the compiler's own directory — holds a `libstdc++.so` that is a linker script naming
/// `libstdc++.a`. Not loading the shared library saves 0.9 MiB of RSS per VM (8.6 → 7.7 MiB).
let leanExecutableLinkerFlags: [String] = {
  let packageDirectory = String(#filePath.dropLast("Package.swift".count))
  var flags = [
    "-use-ld=lld", "-Xlinker", "--no-export-dynamic",
    "-Xlinker", "--symbol-ordering-file=\(packageDirectory)Sources/skvm/LinkOrder.txt",
    "-Xlinker", "--no-warn-symbol-ordering",
    "-L", "\(packageDirectory)Sources/skvm/StaticCXX",
  ]
  #if canImport(Glibc)
    var text = [CChar](repeating: 0, count: 64)  // "glibc 2.36"
    _ = confstr(Int32(_CS_GNU_LIBC_VERSION), &text, text.count)
    let words = String(decoding: text.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    let version = words.split(separator: " ").last?.split(separator: ".").compactMap { Int($0) } ?? []
    if version.count >= 2, (version[0], version[1]) >= (2, 36) {
      flags += ["-Xlinker", "-z", "-Xlinker", "pack-relative-relocs"]
    }
  #endif
  return flags
}()

let package = Package(
  name: "SwiftKVM",
  platforms: [.macOS(.v15)],
  products: [
    .library(name: "SwiftKVM", targets: ["SwiftKVM"]),
    .library(name: "DiskImage", targets: ["DiskImage"]),
    .library(name: "Virtio", targets: ["Virtio"]),
    .library(name: "Network", targets: ["Network"]),
    .executable(name: "skvm", targets: ["skvm"]),
    .executable(name: "skvmd", targets: ["skvmd"]),
    .executable(name: "skvm-ctl", targets: ["skvm-ctl"]),
    .library(name: "DomainXML", targets: ["DomainXML"]),
  ],
  dependencies: [
    .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
    .package(url: "https://github.com/apple/swift-nio", from: "2.80.0"),
    .package(url: "https://github.com/groue/GRDB.swift", from: "7.0.0"),
  ],
  targets: [
    // Layer 0: the C view of <linux/kvm.h> (structs, ioctl numbers, kvm_run accessors).
    .target(name: "CKVM"),
    // Layer 0: checked arithmetic for untrusted numbers (nil instead of a trap).
    .target(name: "Checked"),
    // Layer 0: JSON values (QMP messages, img's JSON output) over FoundationEssentials' coders.
    .target(name: "JSON"),
    // Layer 0: printf-style text (C's vsnprintf) for output laid out as QEMU's is.
    .target(name: "TextFormat"),
    // Layer 1: typed wrappers over /dev/kvm, VM and vCPU file descriptors.
    .target(name: "KVM", dependencies: ["CKVM"]),
    // Layer 2: guest-physical memory, bounds-checked.
    .target(name: "GuestMemory", dependencies: ["KVM", "Checked", "CSystemCalls"]),
    // Layer 3: the I/O bus and platform devices.
    .target(name: "Devices", dependencies: ["GuestMemory", "Checked"]),
    // Layer 3: host network back ends (tap, macvtap, user-mode networking) with no guest knowledge.
    .target(name: "Network", dependencies: ["CSystemCalls", "CSlirp"]),
    // libslirp's API, loaded with dlopen when user networking is first used (Debian libslirp-dev).
    .target(name: "CSlirp", linkerSettings: [.linkedLibrary("dl")]),
    // Layer 3: virtqueues, the virtio-pci common configuration, virtio devices.
    .target(
      name: "Virtio", dependencies: ["GuestMemory", "DiskImage", "Devices", "Network", "CSystemCalls", "Checked"]),
    // Layer 4: x86 machine setup (CPU modes, page tables, boot).
    .target(name: "Machine", dependencies: ["KVM", "GuestMemory", "Devices"]),
    // Layer 5: assembling and running a VM from one configuration value.
    .target(
      name: "VMM",
      dependencies: [
        "CKVM", "KVM", "GuestMemory", "Devices", "Machine", "Virtio", "DiskImage", "Network", "Checked",
        "CSystemCalls",
      ]),
    // The system zlib (gzip for initramfs images; deflate for qcow2 later).
    .systemLibrary(name: "CZlib", providers: [.apt(["zlib1g-dev"])]),
    // System calls Swift's Glibc module lacks (fallocate, getrandom).
    .target(name: "CSystemCalls"),
    // Disk images: raw and qcow2 (no KVM needed).
    .target(name: "DiskImage", dependencies: ["CZlib", "CSystemCalls", "Checked"]),
    // The default guest: Debian's kernel and a busybox initramfs, built and cached.
    .target(name: "GuestKit", dependencies: ["CKVM", "CZlib"]),
    // Layer 6: the QMP monitor (control sockets) over a managed machine.
    .target(
      name: "Monitor", dependencies: ["VMM", "Devices", "DiskImage", "Checked", "CSystemCalls", "JSON", "TextFormat"]),
    // The library product: one import for embedders.
    .target(name: "SwiftKVM", dependencies: ["VMM", "Monitor", "DiskImage", "Network", "JSON"]),
    // The command-line tool.
    .executableTarget(
      name: "skvm",
      dependencies: [
        "SwiftKVM", "GuestKit", "Checked", "TextFormat",
        .product(name: "ArgumentParser", package: "swift-argument-parser"),
      ],
      exclude: ["LinkOrder.txt", "StaticCXX"],
      linkerSettings: [.unsafeFlags(leanExecutableLinkerFlags, .when(platforms: [.linux]))]
    ),
    // Layer 8: management — what the daemon and its clients share (reports, states, errors, paths).
    .target(name: "ManagementModel"),
    // Domain definitions: libvirt's domain XML read strictly and written back (libxml2), names,
    // MAC addresses, CPU lists, and the `skvm run` command line of a definition.
    .target(name: "DomainXML", dependencies: ["CSystemCalls", "Network"]),
    // The registry (SQLite through GRDB) and the supervisor of each domain's `skvm run` process.
    .target(
      name: "Management",
      dependencies: [
        "DomainXML", "ManagementModel", "Monitor", "VMM", "DiskImage", "Network", "JSON", "CSystemCalls",
        .product(name: "GRDB", package: "GRDB.swift"),
      ]),
    // The CLI's client of the daemon's API (SwiftNIO's HTTP/1.1 codec over a blocking socket).
    .target(
      name: "ManagementClient",
      dependencies: [
        "ManagementModel", .product(name: "NIOCore", package: "swift-nio"),
        .product(name: "NIOEmbedded", package: "swift-nio"), .product(name: "NIOHTTP1", package: "swift-nio"),
      ]),
    // The daemon's HTTP API on unix sockets (SwiftNIO).
    .target(
      name: "ManagementAPI",
      dependencies: [
        "Management", "ManagementModel", "ManagementClient", "JSON", .product(name: "NIOCore", package: "swift-nio"),
        .product(name: "NIOPosix", package: "swift-nio"), .product(name: "NIOHTTP1", package: "swift-nio"),
      ]),
    // The management daemon.
    .executableTarget(
      name: "skvmd",
      dependencies: [
        "Management", "ManagementModel", "ManagementAPI",
        .product(name: "ArgumentParser", package: "swift-argument-parser"),
      ]),
    // The management CLI (`skvm ctl VERB …`, virsh's verbs), a client of the daemon: it links
    // neither the registry nor the VMM, so that it starts quickly.
    .executableTarget(
      name: "skvm-ctl",
      dependencies: [
        "ManagementModel", "ManagementClient", "JSON",
        .product(name: "ArgumentParser", package: "swift-argument-parser"),
      ]),
    .testTarget(
      name: "ManagementTests",
      dependencies: ["DomainXML", "Management", "ManagementModel", "ManagementAPI", "JSON", "VMM"]),
    .testTarget(
      name: "SKVMCommandTests",
      dependencies: ["skvm", .product(name: "ArgumentParser", package: "swift-argument-parser")]),
    .testTarget(name: "KVMTests", dependencies: ["KVM", "CKVM"]),
    .testTarget(name: "GuestMemoryTests", dependencies: ["GuestMemory", "KVM", "CKVM"]),
    .testTarget(name: "DevicesTests", dependencies: ["Devices", "GuestMemory"]),
    .testTarget(name: "MachineTests", dependencies: ["Machine"]),
    .testTarget(name: "VMMTests", dependencies: ["SwiftKVM", "GuestKit"]),
    .testTarget(name: "GuestKitTests", dependencies: ["GuestKit"]),
    .testTarget(name: "DiskImageTests", dependencies: ["DiskImage"]),
    .testTarget(name: "VirtioTests", dependencies: ["Virtio", "GuestMemory", "DiskImage", "Devices", "Network"]),
    .testTarget(name: "MonitorTests", dependencies: ["Monitor", "VMM", "Devices"]),
  ]
)
