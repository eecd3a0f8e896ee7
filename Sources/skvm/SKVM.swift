import ArgumentParser
import SwiftKVM

/// `skvm`: the SwiftKVM command-line tool.
@main
struct SKVM: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "skvm",
    abstract: "SwiftKVM: a KVM virtual machine monitor and toolstack.",
    version: "skvm \(SwiftKVMVersion.current)",
    subcommands: [Run.self, Kit.self, MonitorCommand.self, ImgCommand.self],
    defaultSubcommand: nil
  )

  static func main() {
    StartupTrace.shared.begin("main")
    main(nil)
  }
}
