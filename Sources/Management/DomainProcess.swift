import CSystemCalls
import DomainXML
import Foundation
import Glibc
import JSON
import Monitor

/// How a domain's process ended.
public struct DomainExit: Sendable, Equatable {
  /// The exit status, when known (the daemon's own children; not a process found after a restart).
  public var status: Int32?
  /// The signal that killed it, when known.
  public var signal: Int32?
  /// The reason of the last QMP `SHUTDOWN` event (`guest-shutdown`, `guest-reset`, `host-qmp-quit`…).
  public var shutdownReason: String?
}

/// Why a process could not be started or reached.
public struct DomainProcessError: Error, CustomStringConvertible {
  public let description: String
  init(_ description: String) { self.description = description }
}

/// One domain's `skvm run` process: started by the daemon in a session of its own (so the daemon
/// can die and come back without touching it), or found again after a restart by pid and start
/// time. Holds the daemon's QMP connection to it and watches for its end (pidfd).
final class DomainProcess: @unchecked Sendable {
  let pid: pid_t
  /// Clock ticks since boot when the process started (/proc/PID/stat field 22).
  let startTime: UInt64
  let monitorPath: String
  private let isChild: Bool
  private let lock = NSLock()
  /// Guarded by `lock`.
  private var monitor: MonitorConnection?
  private var shutdownReason: String?
  private var exited = false

  private init(pid: pid_t, startTime: UInt64, monitorPath: String, isChild: Bool) {
    self.pid = pid
    self.startTime = startTime
    self.monitorPath = monitorPath
    self.isChild = isChild
  }

  /// Starts `executable` with `arguments`, output appended to `logPath`.
  static func spawn(executable: String, arguments: [String], logPath: String, monitorPath: String)
    throws(DomainProcessError) -> DomainProcess
  {
    let log = open(logPath, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0o600)
    guard log >= 0 else {
      throw DomainProcessError("cannot open the log \(logPath): \(String(cString: strerror(errno)))")
    }
    defer { close(log) }
    let null = open("/dev/null", O_RDONLY | O_CLOEXEC)
    guard null >= 0 else { throw DomainProcessError("cannot open /dev/null") }
    defer { close(null) }
    let argv = ([executable] + arguments).map { strdup($0) } + [nil]
    defer { for pointer in argv { free(pointer) } }
    var environment = ProcessInfo.processInfo.environment
    environment.removeValue(forKey: "LISTEN_FDS")
    let envp = environment.map { strdup("\($0.key)=\($0.value)") } + [nil]
    defer { for pointer in envp { free(pointer) } }
    var pid: pid_t = 0
    let error = csys_spawn_detached(executable, argv, envp, null, log, &pid)
    guard error == 0 else {
      throw DomainProcessError("cannot start \(executable): \(String(cString: strerror(error)))")
    }
    // The start time identifies the process later; a child that already died has none, and
    // its end is reported by the watcher.
    let start = processStartTime(pid) ?? 0
    return DomainProcess(pid: pid, startTime: start, monitorPath: monitorPath, isChild: true)
  }

  /// The process `pid` if it still runs and started at `startTime`; nil otherwise.
  static func adopt(pid: pid_t, startTime: UInt64, monitorPath: String) -> DomainProcess? {
    guard pid > 0, processStartTime(pid) == startTime else { return nil }
    return DomainProcess(pid: pid, startTime: startTime, monitorPath: monitorPath, isChild: false)
  }

  /// Field 22 of /proc/PID/stat, or nil when there is no such process.
  static func processStartTime(_ pid: pid_t) -> UInt64? {
    guard let text = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
      let close = text.lastIndex(of: ")")
    else { return nil }
    let fields = text[text.index(after: close)...].split(separator: " ")
    // fields[0] is field 3 (state); the start time is field 22.
    guard fields.count > 19, fields[0] != "Z" else { return nil }
    return UInt64(fields[19])
  }

  /// Connects the daemon's monitor connection, waiting up to `timeout` seconds for the process
  /// to create its socket. `onEvent` gets every event.
  func connectMonitor(timeout: Double, onEvent: @escaping @Sendable (String, JSONValue) -> Void)
    throws(DomainProcessError)
  {
    let deadline = Date().addingTimeInterval(timeout)
    var lastError = "no monitor socket"
    while Date() < deadline {
      if hasExited { throw DomainProcessError("the process ended before its monitor answered") }
      if FileManager.default.fileExists(atPath: monitorPath) {
        do {
          let address = MonitorAddress(endpoint: .unix(path: monitorPath))
          let connection = try MonitorConnection(address: address) { [weak self] name, message in
            if name == "SHUTDOWN", let reason = message["data"]?["reason"]?.string {
              self?.lock.withLock { self?.shutdownReason = reason }
            }
            onEvent(name, message)
          }
          lock.withLock { monitor = connection }
          return
        } catch {
          lastError = error.description
        }
      }
      usleep(1000)
    }
    throw DomainProcessError("its monitor (\(monitorPath)) did not answer within \(Int(timeout)) s: \(lastError)")
  }

  /// Runs a QMP command on the domain's monitor.
  @discardableResult
  func execute(_ command: String, arguments: [String: JSONValue] = [:]) throws(DomainProcessError) -> JSONValue {
    guard let monitor = lock.withLock({ self.monitor }) else {
      throw DomainProcessError("the domain's monitor is not connected")
    }
    do {
      return try monitor.execute(command, arguments: arguments)
    } catch {
      throw DomainProcessError(error.description)
    }
  }

  /// True once the process has ended (a zombie not yet reaped counts as ended).
  /// The threads running each vCPU (QMP `query-cpus-fast`), by vCPU index.
  func vcpuThreads() throws(DomainProcessError) -> [Int: Int32] {
    var threads: [Int: Int32] = [:]
    for cpu in try execute("query-cpus-fast").array ?? [] {
      if let index = cpu["cpu-index"]?.integer, let thread = cpu["thread-id"]?.integer {
        threads[index] = Int32(truncatingIfNeeded: thread)
      }
    }
    return threads
  }

  /// Pins each vCPU in `pins` (vCPU → CPU list) to its host CPUs; throws naming the first that failed.
  func pin(_ pins: [Int: String]) throws(DomainProcessError) {
    guard !pins.isEmpty else { return }
    let threads = try vcpuThreads()
    for (vcpu, list) in pins.sorted(by: { $0.key < $1.key }) {
      guard let thread = threads[vcpu] else { throw DomainProcessError("vCPU \(vcpu) has no thread") }
      guard let cpus = CPUSet.parse(list) else {
        throw DomainProcessError("cpuset '\(list)' names CPUs this host (\(CPUSet.hostCount) CPUs) does not have")
      }
      if let failure = CPUSet.pin(thread: thread, to: cpus) {
        throw DomainProcessError("cannot pin vCPU \(vcpu) to \(list): \(failure)")
      }
    }
  }

  private var hasExited: Bool {
    if lock.withLock({ exited }) { return true }
    return Self.processStartTime(pid) == nil
  }

  /// Sends `signal` to the process.
  func signal(_ signal: Int32) { _ = Glibc.kill(pid, signal) }

  /// Calls `onExit` once, on a thread of its own, when the process ends.
  func watch(onExit: @escaping @Sendable (DomainExit) -> Void) {
    let pidfd = csys_pidfd_open(pid)
    Thread.detachNewThread { [self] in
      if pidfd >= 0 {
        var descriptor = pollfd(fd: pidfd, events: Int16(POLLIN), revents: 0)
        while poll(&descriptor, 1, -1) < 0 && errno == EINTR {}
        close(pidfd)
      } else {
        // No pidfd (an old kernel): poll until the process has ended (a zombie has).
        while Self.processStartTime(pid) != nil { usleep(100_000) }
      }
      var exit = DomainExit()
      if isChild {
        var status: Int32 = 0
        var result: pid_t
        repeat { result = waitpid(pid, &status, 0) } while result < 0 && errno == EINTR
        if result == pid {
          if status & 0x7f == 0 {
            exit.status = (status >> 8) & 0xff
          } else {
            exit.signal = status & 0x7f
          }
        }
      }
      // The events the process sent before it ended (SHUTDOWN and its reason): read to the end.
      _ = lock.withLock { monitor }?.waitUntilClosed(seconds: 2)
      lock.withLock {
        exited = true
        exit.shutdownReason = shutdownReason
        monitor = nil
      }
      onExit(exit)
    }
  }
}
