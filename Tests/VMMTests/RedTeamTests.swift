import Foundation
import Synchronization
import Testing

@testable import SwiftKVM

/// What a red-team run found could crash or hang skvm, each case tried again: every one must
/// end promptly with a clear error (or a correct answer), never a signal or a wait forever.
@Suite("Red-team regressions: no crash, no hang", .serialized)
struct RedTeamTests {
  /// Runs skvm; kills it (and records the hang) if it has not ended within `seconds`.
  static func skvm(_ arguments: [String], within seconds: Double = 15) throws -> CommandLineTests.Result {
    let finished = Mutex(false)
    let result = try ChildProcess.run(CommandLineTests.executable, arguments) { process in
      let pid = process.processIdentifier
      Thread.detachNewThread {
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline {
          if finished.withLock({ $0 }) { return }
          Thread.sleep(forTimeInterval: 0.05)
        }
        if !finished.withLock({ $0 }) { kill(pid, SIGKILL) }
      }
    }
    finished.withLock { $0 = true }
    #expect(
      result.status != 128 + SIGKILL && result.status != SIGKILL, "skvm \(arguments) hung: killed after \(seconds) s")
    #expect(result.status < 128, "skvm \(arguments) ended with a signal (status \(result.status)): \(result.errors)")
    return CommandLineTests.Result(status: result.status, output: result.output, errors: result.errors)
  }

  static func scratch() throws -> String { try ImgCommandTests.scratch() }

  @Test("Malformed option lists are errors naming the item, not traps")
  func optionLists() throws {
    for arguments in [
      ["--disk", "x.raw,="], ["--disk", "x.raw,,readonly=on"], ["--disk", ",readonly=on"],
      ["--disk", "x.raw,readonly=on,readonly=off"], ["--qmp", "unix:/tmp/q.sock,"], ["--qmp", "unix:/tmp/q.sock,="],
      ["--qmp", ","], ["--qmp", "tcp::"],
    ] {
      let result = try Self.skvm(["run", "--hello"] + arguments)
      #expect(result.status == 64 || result.status == 1, "\(arguments): status \(result.status)")
      #expect(!result.errors.isEmpty && !result.output.contains("Hello"), "\(arguments): \(result.errors)")
    }
  }

  @Test("FIFOs where files are expected are refused at once: img info, --disk, --flat, --kernel, a backing file")
  func fifos() throws {
    let directory = try Self.scratch()
    defer { try? FileManager.default.removeItem(atPath: directory) }
    let fifo = directory + "/fifo"
    #expect(mkfifo(fifo, 0o600) == 0)
    for arguments in [
      ["img", "info", fifo], ["img", "check", fifo], ["run", "--hello", "--disk", fifo],
      ["run", "--hello", "--disk", "\(fifo),readonly=on"], ["run", "--flat", fifo], ["run", "--kernel", fifo],
    ] {
      let result = try Self.skvm(arguments)
      #expect(result.status == 1 && result.errors.contains("not a regular file"), "\(arguments): \(result.errors)")
    }
    let overlay = directory + "/overlay.qcow2"
    _ = try ImgCommandTests.qemuImg(["create", "-q", "-f", "qcow2", "-u", "-b", "fifo", "-F", "raw", overlay, "1M"])
    let chained = try Self.skvm(["img", "info", "--backing-chain", overlay])
    #expect(chained.status == 1 && chained.errors.contains("not a regular file"), "\(chained.errors)")
  }

  @Test("Hostile qcow2 headers: every verb and --disk ends in one clear line, no trap")
  func hostileHeaders() throws {
    let directory = try Self.scratch()
    defer { try? FileManager.default.removeItem(atPath: directory) }
    let image = directory + "/hostile.qcow2"
    _ = try ImgCommandTests.qemuImg(["create", "-q", "-f", "qcow2", image, "4M"])
    var bytes = [UInt8](try Data(contentsOf: URL(fileURLWithPath: image)))
    for index in 8..<16 { bytes[index] = 0xFF }  // backing_file_offset = 2^64 - 1
    bytes[19] = 16
    try Data(bytes).write(to: URL(fileURLWithPath: image))
    for arguments in [
      ["img", "info", image], ["img", "check", image], ["img", "map", image], ["img", "snapshot", "-l", image],
      ["img", "convert", "-O", "raw", image, directory + "/out.raw"], ["img", "compare", image, image],
      ["run", "--hello", "--disk", image],
    ] {
      let result = try Self.skvm(arguments)
      #expect(result.status == 1 || result.status == 2, "\(arguments): status \(result.status)")
      #expect(result.errors.contains("backing file name"), "\(arguments): \(result.errors)")
    }
  }

  @Test("--disk readonly=on refuses an image another process writes; force-share verbs may look")
  func readerOfWrittenImage() throws {
    let directory = try Self.scratch()
    defer { try? FileManager.default.removeItem(atPath: directory) }
    let path = directory + "/busy.raw"
    let writer = try RawImage.create(at: path, size: 1 << 20)
    defer { writer.close() }
    let refused = try Self.skvm(["run", "--hello", "--disk", "\(path),readonly=on"])
    #expect(refused.status == 1 && refused.errors.contains("being written by another process"), "\(refused.errors)")
    #expect(!refused.output.contains("Hello"))
    let info = try Self.skvm(["img", "info", path])
    #expect(info.status == 1 && info.errors.contains("-U"), "\(info.errors)")
    let shared = try Self.skvm(["img", "info", "-U", path])
    #expect(shared.status == 0 && shared.output.contains("virtual size: 1 MiB"), "\(shared.errors)")
  }

  @Test("Two --qmp with one socket path are refused as such, before the guest starts")
  func duplicateMonitors() throws {
    let socket = FileManager.default.temporaryDirectory.appendingPathComponent("skvm-dup-\(getpid()).sock").path
    defer { unlink(socket) }
    let result = try Self.skvm(["run", "--hello", "--qmp", "unix:\(socket)", "--qmp", "unix:\(socket),wait=off"])
    #expect(result.status == 1 && result.errors.contains("given twice"), "\(result.errors)")
    #expect(!result.errors.contains("live process") && !result.output.contains("Hello"))
  }

  @Test("Disk images are opened before /dev/kvm is touched: a bad disk fails even where there is no KVM")
  func disksBeforeKVM() throws {
    var configuration = VirtualMachineConfiguration(boot: .flatImage(bytes: [0xF4], entry: .real))
    configuration.disks = [DiskConfiguration(path: "/nonexistent/disk.img")]
    #expect(
      performing: { _ = try VirtualMachine(configuration: configuration, kvmPath: "/nonexistent/kvm") },
      throws: { error in
        guard case VirtualMachineError.disk(let path, _) = error else { return false }
        return path == "/nonexistent/disk.img"
      })
  }
}
