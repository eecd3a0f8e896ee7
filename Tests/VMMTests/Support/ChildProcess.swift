import Foundation

/// Runs a program to completion and collects what it printed; standard output and standard
/// error are drained at once (one on another thread), so neither pipe can fill and stall it.
enum ChildProcess {
  struct Result {
    let status: Int32
    let output: String
    let errors: String
  }

  /// With `mergeErrors`, standard error goes into `output` too (and `errors` is empty).
  static func run(
    _ executable: URL, _ arguments: [String], directory: URL? = nil, mergeErrors: Bool = false,
    whileRunning: (Process) -> Void = { _ in }
  ) throws -> Result {
    let process = Process()
    process.executableURL = executable
    process.arguments = arguments
    if let directory { process.currentDirectoryURL = directory }
    let output = Pipe()
    let errors = Pipe()
    process.standardOutput = output
    process.standardError = mergeErrors ? output : errors
    try process.run()
    whileRunning(process)
    nonisolated(unsafe) var errorData = Data()
    let drained = DispatchSemaphore(value: 0)
    if !mergeErrors {
      Thread.detachNewThread {
        errorData = errors.fileHandleForReading.readDataToEndOfFile()
        drained.signal()
      }
    }
    let outputData = output.fileHandleForReading.readDataToEndOfFile()
    if !mergeErrors { drained.wait() }
    process.waitUntilExit()
    return Result(
      status: process.terminationStatus, output: String(decoding: outputData, as: UTF8.self),
      errors: String(decoding: errorData, as: UTF8.self))
  }

  /// The same, awaited: the wait happens on a thread of its own, so a long child (a lane boot,
  /// a Python driver) does not hold one of the test runner's few cooperative threads and the
  /// other tests run meanwhile.
  static func run(
    _ executable: URL, _ arguments: [String], directory: URL? = nil, mergeErrors: Bool = false
  ) async throws -> Result {
    try await withCheckedThrowingContinuation { continuation in
      Thread.detachNewThread {
        continuation.resume(
          with: Swift.Result { try run(executable, arguments, directory: directory, mergeErrors: mergeErrors) })
      }
    }
  }
}
