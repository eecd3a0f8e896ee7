import ArgumentParser
import Glibc
import SwiftKVM

/// `skvm`: the SwiftKVM command-line tool.
@main
struct SKVM: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "skvm",
    abstract: "SwiftKVM: a KVM virtual machine monitor and toolstack.",
    version: "skvm \(SwiftKVMVersion.current)",
    subcommands: [Run.self, Kit.self, MonitorCommand.self, ImgCommand.self, Ctl.self],
    defaultSubcommand: nil
  )

  static func main() {
    StartupTrace.shared.begin("main")
    // The host's CPUID table, asked for while the command line is parsed (about 1 ms on a
    // nested host, where every CPUID traps).
    if CommandLine.arguments.dropFirst().first == "run" {
      HostCPUID.prefetch()
      // A plain command line skips ArgumentParser (see RunQuickParse.swift); its errors and
      // exit statuses are reported as ArgumentParser reports them.
      if let options = RunOptions(quickParsing: CommandLine.arguments.dropFirst(2)), (try? options.validate()) != nil {
        do {
          try options.run()
        } catch let code as ExitCode {
          // How every run ends: ArgumentParser's exit(withError:) would build its help text first.
          Glibc.exit(code.rawValue)
        } catch {
          exit(withError: error)
        }
        Glibc.exit(0)
      }
    }
    if CommandLine.arguments.dropFirst().first == "ctl" { Ctl.exec(Array(CommandLine.arguments.dropFirst(2))) }
    main(nil)
  }
}
