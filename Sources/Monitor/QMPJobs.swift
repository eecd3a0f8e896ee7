import JSON
import Synchronization
import VMM

/// QMP's background jobs, as the snapshot commands use them (`snapshot-save`, `snapshot-load`,
/// `snapshot-delete`): each runs on a thread of its own, reports every status change with a
/// `JOB_STATUS_CHANGE` event (created, running, waiting, pending, concluded — or aborting,
/// concluded with an error), is listed by `query-jobs` and removed by `job-dismiss`.
final class QMPJobs: @unchecked Sendable {
  struct Job {
    var id: String
    var type: String
    var status: String
    var error: String?
  }

  private let machine: ManagedMachine
  private let jobs = Mutex<[Job]>([])

  init(machine: ManagedMachine) { self.machine = machine }

  /// Starts job `id` of `type` running `work`; an id may be used by one job at a time.
  func start(id: String, type: String, _ work: @escaping @Sendable () throws -> Void) throws(QMPError) {
    let added = jobs.withLock { jobs -> Bool in
      guard !jobs.contains(where: { $0.id == id }) else { return false }
      jobs.append(Job(id: id, type: type, status: "created"))
      return true
    }
    guard added else { throw QMPError(.genericError, "Job ID '\(id)' already in use") }
    machine.post(.job(id: id, status: "created"))
    do {
      _ = try OSThread(name: "qmp-job") { [self] in
        set(id, "running")
        do {
          try work()
          for status in ["waiting", "pending", "concluded"] { set(id, status) }
        } catch {
          set(id, "aborting", error: "\(error)")
          set(id, "concluded")
        }
      }
    } catch {
      set(id, "concluded", error: "\(error)")
    }
  }

  private func set(_ id: String, _ status: String, error: String? = nil) {
    jobs.withLock { jobs in
      guard let index = jobs.firstIndex(where: { $0.id == id }) else { return }
      jobs[index].status = status
      if let error { jobs[index].error = error }
    }
    machine.post(.job(id: id, status: status))
  }

  /// `query-jobs`, in QEMU's `JobInfo` shape.
  var list: JSONValue {
    jobs.withLock { jobs in
      .array(
        jobs.map { job in
          var info: [String: JSONValue] = [
            "id": .string(job.id), "type": .string(job.type), "status": .string(job.status),
            "current-progress": job.status == "concluded" ? 1 : 0, "total-progress": 1,
          ]
          if let error = job.error { info["error"] = .string(error) }
          return .object(info)
        })
    }
  }

  /// `job-dismiss`: removes a concluded job.
  func dismiss(_ id: String) throws(QMPError) {
    let outcome = jobs.withLock { jobs -> String? in
      guard let index = jobs.firstIndex(where: { $0.id == id }) else { return "Job not found" }
      guard jobs[index].status == "concluded" else {
        return "Job '\(id)' in state '\(jobs[index].status)' cannot accept command verb 'dismiss'"
      }
      jobs.remove(at: index)
      return nil
    }
    if let outcome { throw QMPError(.genericError, outcome) }
    machine.post(.job(id: id, status: "null"))
  }
}
