// swift-tools-version: 6.1
// libFuzzer targets, kept out of the main package (their entry point is libFuzzer's):
//   cd Fuzz && swift build -c release -Xswiftc -sanitize=fuzzer,address
//   .build/release/FuzzImage -max_total_time=600 corpus/image          (a long run)
//   .build/release/FuzzVirtqueue -max_total_time=600 corpus/virtqueue
import PackageDescription

let package = Package(
  name: "SwiftKVMFuzz",
  dependencies: [.package(name: "SwiftKVM", path: "..")],
  targets: [
    .target(name: "FuzzSupport"),
    // -parse-as-library: no Swift top-level main; <Target>_main (what SwiftPM makes an
    // executable's entry) hands over to libFuzzer's driver.
    .executableTarget(
      name: "FuzzImage", dependencies: ["FuzzSupport", .product(name: "DiskImage", package: "SwiftKVM")],
      swiftSettings: [.unsafeFlags(["-parse-as-library"])]),
    .executableTarget(
      name: "FuzzVirtqueue",
      dependencies: [
        "FuzzSupport", .product(name: "Virtio", package: "SwiftKVM"), .product(name: "DiskImage", package: "SwiftKVM"),
      ],
      swiftSettings: [.unsafeFlags(["-parse-as-library"])]),
  ]
)
