import Foundation
import Synchronization
import Testing

@testable import Virtio

/// A device's interrupt closure must stay as it was connected, however often it is raised:
/// kept bare in a `Mutex`, each raise wrapped it in more reabstraction thunks (and the next
/// raise ran through all of them), so block I/O slowed down the longer a guest ran.
@Suite("Queue interrupt lines")
struct QueueInterruptLineTests {
  @Test("10,000 raises reach the handler through the same frames as the first (no wrappers pile up)")
  func raisesDoNotAccumulate() {
    let line = QueueInterruptLine()
    let raised = Atomic<Int>(0)
    // Where the handler's frame lies: with thunks piling up, each raise ran deeper in the
    // stack (about 48 bytes more each time; a long-running guest's I/O thread would overflow it).
    let frame = Atomic<Int>(0)
    line.connect { queue in
      var marker = queue
      withUnsafeMutablePointer(to: &marker) { frame.store(Int(bitPattern: $0), ordering: .relaxed) }
      raised.add(queue, ordering: .relaxed)
    }
    func raiseOnce() -> Int {
      line.raise(1)
      return frame.load(ordering: .relaxed)
    }
    let first = raiseOnce()
    for _ in 0..<10_000 { line.raise(1) }
    let last = raiseOnce()
    #expect(raised.load(ordering: .relaxed) == 10_002)
    #expect(abs(first - last) < 1024, "the handler ran \(first - last) bytes deeper after 10,000 raises")
    line.disconnect()
    line.raise(1)
    #expect(raised.load(ordering: .relaxed) == 10_002)
  }

  @Test("No closure is kept bare in a Mutex anywhere in Sources (wrap it in a struct)")
  func noBareClosuresInMutexes() throws {
    let sources = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
      .deletingLastPathComponent().appendingPathComponent("Sources")
    let files = try #require(FileManager.default.enumerator(at: sources, includingPropertiesForKeys: nil))
    var offenders: [String] = []
    for case let file as URL in files where file.pathExtension == "swift" {
      for (number, line) in try String(contentsOf: file, encoding: .utf8).split(separator: "\n").enumerated() {
        // Mutex<(...) -> ...>, Mutex<@Sendable (...) -> ...>, and optionals of either; arrays of
        // closures are stored abstractly already and are not rewritten.
        let code = line.trimmingCharacters(in: .whitespaces)
        if !code.hasPrefix("//"), code.range(of: #"Mutex<\(?(@Sendable )?\("#, options: .regularExpression) != nil,
          code.contains("->")
        {
          offenders.append("\(file.lastPathComponent):\(number + 1): \(code)")
        }
      }
    }
    #expect(offenders.isEmpty, "\(offenders.joined(separator: "\n"))")
  }
}
