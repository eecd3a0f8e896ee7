import ArgumentParser
import Testing

@testable import skvm

/// `skvm run`'s direct command-line reader against ArgumentParser, the reference: the same
/// options from every plain command line, nil (ArgumentParser decides) for anything else,
/// and every option `Run` declares read directly.
@Suite struct RunQuickParseTests {
  /// Command lines users and tests give, each valid.
  static let plain: [[String]] = [
    [],
    ["--hello"],
    ["--flat", "guest.bin", "--memory", "16M"],
    ["--flat=guest.bin", "--flat-entry", "long", "--memory=256M", "--cpus", "2", "--stats"],
    ["--kernel", "vmlinuz", "--initrd", "initrd.img", "--cmdline", "console=ttyS0 quiet", "--console", "virtio"],
    [
      "--disk", "a.qcow2", "--disk", "b.raw,format=raw,readonly=on", "--net", "user,hostfwd=tcp::2222-:22",
      "--net", "tap,ifname=tap0", "--rng",
    ],
    ["--qmp", "unix:/tmp/q.sock,server=on,wait=off", "--qmp", "tcp:127.0.0.1:4444", "--paused", "--name", "vm1"],
    [
      "--bios", "/usr/share/seabios/bios-256k.bin", "--cdrom", "debian.iso", "--boot", "order=d,menu=on",
      "--debugcon", "/tmp/seabios.log",
    ],
    ["--incoming", "tcp::4444"],
    ["--incoming", "defer", "--qmp", "unix:/tmp/d.sock"],
    ["--incoming", "file:/tmp/vm.snap,mode=copy", "--console-socket", "/run/skvm/c.sock"],
    ["--flat", "p.bin", "--disk", "d.qcow2", "--loadvm", "snap1", "--debug-exit-port", "none", "--console", "none"],
    ["--kernel", "k", "--debug-exit-port=0x501", "--cmdline=a=b c=d"],
  ]

  /// Command lines the direct reader leaves to ArgumentParser.
  static let unusual: [[String]] = [
    ["--help"], ["-h"], ["--version"], ["guest.bin"], ["--"], ["--flat", "a", "--flat", "b"],
    ["--hello", "--hello"], ["--hello=true"], ["--memory"], ["--memory", "--hello"], ["--cmdline", "-x"],
    ["--cpus", "two"], ["--console", "vga"], ["--flat-entry", "protected"], ["--name="], ["--nosuch"],
    ["--experimental-dump-help"], ["--generate-completion-script", "bash"], ["-kernel", "vmlinuz"],
  ]

  @Test(arguments: plain)
  func plainCommandLinesReadAsArgumentParserReadsThem(arguments: [String]) throws {
    let reference = try Run.parse(arguments).options
    let quick = RunOptions(quickParsing: arguments[...])
    #expect(quick == reference)
  }

  @Test(arguments: unusual)
  func unusualCommandLinesAreLeftToArgumentParser(arguments: [String]) {
    #expect(RunOptions(quickParsing: arguments[...]) == nil)
  }

  /// Every option in `skvm run --help` is read directly (a new option added to `Run` alone
  /// fails here).
  @Test func everyDeclaredOptionIsReadDirectly() throws {
    let help = Run.helpMessage(columns: 400)
    var names: [String] = []
    for line in help.split(separator: "\n") {
      let words = line.split(separator: " ", omittingEmptySubsequences: true)
      guard let first = words.first, first.hasPrefix("--"), first != "--help", first != "--version" else { continue }
      names.append(String(first.split(separator: "=").first!))
      // An option shows its value's name: `--memory <size>`.
      let takesValue = words.count > 1 && words[1].hasPrefix("<")
      let samples = ["--console": "serial", "--flat-entry": "long", "--cpus": "2"]
      let arguments = takesValue ? [names.last!, samples[names.last!] ?? "value"] : [names.last!]
      #expect(RunOptions(quickParsing: arguments[...]) != nil, "\(arguments) is not read directly")
    }
    #expect(names.count >= 24, "only \(names.count) options found in: \(help)")
  }
}
