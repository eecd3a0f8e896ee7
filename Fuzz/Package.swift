// swift-tools-version: 6.1
// libFuzzer targets, kept out of the main package (their entry point is libFuzzer's):
//   cd Fuzz && swift build -c release -Xswiftc -sanitize=fuzzer,address
//   .build/release/FuzzImageCheck -max_total_time=600 corpus/image     (a long run; also Read, Write)
//   .build/release/FuzzVirtqueue -max_total_time=600 corpus/virtqueue
//   .build/release/FuzzControl -max_total_time=600 corpus/control          (option parsers, PCI reports)
//   .build/release/FuzzDomainXML -max_total_time=600 corpus/domainxml      (domain XML, CPU lists, names)
import PackageDescription

let package = Package(
  name: "SwiftKVMFuzz",
  dependencies: [.package(name: "SwiftKVM", path: "..")],
  targets: [
    .target(name: "FuzzSupport"),
    // -parse-as-library: no Swift top-level main; <Target>_main (what SwiftPM makes an
    // executable's entry) hands over to libFuzzer's driver.
    // Disk images through every img verb: reading ones, check and check -r all, writing ones.
    .target(name: "ImageVerbs", dependencies: [.product(name: "DiskImage", package: "SwiftKVM")]),
    .executableTarget(
      name: "FuzzImageRead", dependencies: ["FuzzSupport", "ImageVerbs"],
      swiftSettings: [.unsafeFlags(["-parse-as-library"])]),
    .executableTarget(
      name: "FuzzImageCheck", dependencies: ["FuzzSupport", "ImageVerbs"],
      swiftSettings: [.unsafeFlags(["-parse-as-library"])]),
    .executableTarget(
      name: "FuzzImageWrite", dependencies: ["FuzzSupport", "ImageVerbs"],
      swiftSettings: [.unsafeFlags(["-parse-as-library"])]),
    .executableTarget(
      name: "FuzzControl", dependencies: ["FuzzSupport", .product(name: "SwiftKVM", package: "SwiftKVM")],
      swiftSettings: [.unsafeFlags(["-parse-as-library"])]),
    .executableTarget(
      name: "FuzzSnapshot",
      dependencies: [
        "FuzzSupport", .product(name: "SwiftKVM", package: "SwiftKVM"), .product(name: "Virtio", package: "SwiftKVM"),
      ],
      swiftSettings: [.unsafeFlags(["-parse-as-library"])]),
    // What the management daemon reads: domain XML (and the round trip of what it accepts), CPU
    // lists, domain names, UUIDs.
    .executableTarget(
      name: "FuzzDomainXML", dependencies: ["FuzzSupport", .product(name: "DomainXML", package: "SwiftKVM")],
      swiftSettings: [.unsafeFlags(["-parse-as-library"])]),
    .executableTarget(
      name: "FuzzVirtqueue",
      dependencies: [
        "FuzzSupport", .product(name: "Virtio", package: "SwiftKVM"), .product(name: "DiskImage", package: "SwiftKVM"),
        .product(name: "Network", package: "SwiftKVM"),
      ],
      swiftSettings: [.unsafeFlags(["-parse-as-library"])]),
  ]
)
