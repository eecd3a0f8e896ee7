import SwiftKVM

/// `skvm run`'s command line read directly, without ArgumentParser: its reflection and generic
/// metadata were three quarters of the instructions `skvm run` executed before its guest's
/// first byte (callgrind, a tiny flat guest). Only plain, well-formed command lines go this
/// way; anything else — help, an unknown or repeated option, a value that looks like an
/// option, a malformed number or choice — returns nil, and ArgumentParser parses it and says
/// what is wrong. `SKVMCommandTests` checks both parsers agree and that every option `Run`
/// declares is read here.
extension RunOptions {
  init?(quickParsing arguments: ArraySlice<String>) {
    self.init()
    var seen: [Substring] = []
    var index = arguments.startIndex
    while index < arguments.endIndex {
      let argument = arguments[index]
      index += 1
      guard argument.hasPrefix("--") else { return nil }
      var name = argument.dropFirst(2)
      var inline: Substring?
      if let equals = name.firstIndex(of: "=") {
        inline = name[name.index(after: equals)...]
        name = name[..<equals]
      }
      // --qmp, --disk and --net repeat (each occurrence adds one); any other option once.
      let repeatable = name == "qmp" || name == "disk" || name == "net"
      guard !name.isEmpty, repeatable || !seen.contains(name) else { return nil }
      seen.append(name)
      // A flag takes no value; an option takes the rest after '=' or the next argument.
      func flag() -> Bool? { inline == nil ? true : nil }
      func value() -> String? {
        if let inline { return inline.isEmpty ? nil : String(inline) }
        guard index < arguments.endIndex, !arguments[index].isEmpty, !arguments[index].hasPrefix("-") else {
          return nil
        }
        index += 1
        return arguments[index - 1]
      }
      switch name {
      case "hello":
        guard let set = flag() else { return nil }
        hello = set
      case "rng":
        guard let set = flag() else { return nil }
        rng = set
      case "paused":
        guard let set = flag() else { return nil }
        paused = set
      case "stats":
        guard let set = flag() else { return nil }
        stats = set
      case "kernel":
        guard let text = value() else { return nil }
        kernel = text
      case "initrd":
        guard let text = value() else { return nil }
        initrd = text
      case "cmdline":
        guard let text = value() else { return nil }
        cmdline = text
      case "flat":
        guard let text = value() else { return nil }
        flatPath = text
      case "bios":
        guard let text = value() else { return nil }
        bios = text
      case "cdrom":
        guard let text = value() else { return nil }
        cdrom = text
      case "boot":
        guard let text = value() else { return nil }
        boot = text
      case "debugcon":
        guard let text = value() else { return nil }
        debugcon = text
      case "memory":
        guard let text = value() else { return nil }
        memory = text
      case "incoming":
        guard let text = value() else { return nil }
        incoming = text
      case "loadvm":
        guard let text = value() else { return nil }
        loadvm = text
      case "console-socket":
        guard let text = value() else { return nil }
        consoleSocket = text
      case "name":
        guard let text = value() else { return nil }
        self.name = text
      case "debug-exit-port":
        guard let text = value() else { return nil }
        debugExitPort = text
      case "console":
        guard let choice = value().flatMap(ConsoleChoice.init(rawValue:)) else { return nil }
        console = choice
      case "flat-entry":
        guard let mode = value().flatMap(FlatEntryMode.init(rawValue:)) else { return nil }
        flatEntry = mode
      case "cpus":
        guard let count = value().flatMap({ Int($0) }) else { return nil }
        cpus = count
      case "qmp":
        guard let text = value() else { return nil }
        qmp.append(text)
      case "disk":
        guard let text = value() else { return nil }
        disk.append(text)
      case "net":
        guard let text = value() else { return nil }
        net.append(text)
      default: return nil
      }
    }
  }
}
