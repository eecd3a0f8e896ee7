import Glibc

/// Runs a host program (apt-get, dpkg-deb) and collects its output, without Foundation.
enum HostCommand {
  struct Failure: Error, CustomStringConvertible {
    let command: String
    let detail: String
    var description: String { "\(command): \(detail)" }
  }

  /// Runs `arguments` (found on PATH) in `directory`; returns standard output. Throws on a non-zero status.
  @discardableResult
  static func run(_ arguments: [String], in directory: String? = nil) throws(Failure) -> String {
    let command = arguments.joined(separator: " ")
    // A working directory through the shell: glibc's posix_spawn chdir action is not visible to Swift.
    let arguments = directory.map { ["sh", "-c", "cd \"$0\" && exec \"$@\"", $0] + arguments } ?? arguments
    var pipeEnds: [Int32] = [0, 0]
    guard pipe(&pipeEnds) == 0 else { throw Failure(command: command, detail: "pipe failed") }
    var actions = posix_spawn_file_actions_t()
    posix_spawn_file_actions_init(&actions)
    defer { posix_spawn_file_actions_destroy(&actions) }
    posix_spawn_file_actions_adddup2(&actions, pipeEnds[1], STDOUT_FILENO)
    posix_spawn_file_actions_addclose(&actions, pipeEnds[0])
    var argv: [UnsafeMutablePointer<CChar>?] = arguments.map { strdup($0) } + [nil]
    defer { for pointer in argv { free(pointer) } }
    var pid: pid_t = 0
    let spawned = posix_spawnp(&pid, arguments[0], &actions, nil, &argv, environ)
    close(pipeEnds[1])
    guard spawned == 0 else {
      close(pipeEnds[0])
      throw Failure(command: command, detail: "cannot start it: \(String(cString: strerror(spawned)))")
    }
    var output: [UInt8] = []
    var buffer = [UInt8](repeating: 0, count: 65536)
    while true {
      let count = buffer.withUnsafeMutableBytes { read(pipeEnds[0], $0.baseAddress, $0.count) }
      if count < 0, errno == EINTR { continue }
      if count <= 0 { break }
      output += buffer[0..<count]
    }
    close(pipeEnds[0])
    var status: Int32 = 0
    while waitpid(pid, &status, 0) < 0, errno == EINTR {}
    let exitCode = (status >> 8) & 0xFF
    guard status & 0x7F == 0, exitCode == 0 else {
      throw Failure(command: command, detail: "exited with status \(exitCode)")
    }
    return String(decoding: output, as: UTF8.self)
  }
}

/// Small file-system helpers, without Foundation.
enum Files {
  struct Failure: Error, CustomStringConvertible {
    let description: String
  }

  static func exists(_ path: String) -> Bool { access(path, F_OK) == 0 }

  static func read(_ path: String) throws(Failure) -> [UInt8] {
    let fd = open(path, O_RDONLY | O_CLOEXEC)
    guard fd >= 0 else { throw Failure(description: "cannot read \(path): \(String(cString: strerror(errno)))") }
    defer { close(fd) }
    var bytes: [UInt8] = []
    var buffer = [UInt8](repeating: 0, count: 1 << 20)
    while true {
      let count = buffer.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress, $0.count) }
      if count < 0, errno == EINTR { continue }
      if count < 0 { throw Failure(description: "reading \(path): \(String(cString: strerror(errno)))") }
      if count == 0 { return bytes }
      bytes += buffer[0..<count]
    }
  }

  /// Writes `bytes` to `path` through a temporary file and a rename, so readers never see half a file.
  static func writeAtomically(_ bytes: [UInt8], to path: String) throws(Failure) {
    let temporary = "\(path).tmp-\(getpid())"
    let fd = open(temporary, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
    guard fd >= 0 else { throw Failure(description: "cannot write \(temporary): \(String(cString: strerror(errno)))") }
    var written = 0
    while written < bytes.count {
      let count = bytes[written...].withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
      if count < 0, errno == EINTR { continue }
      if count <= 0 {
        close(fd)
        throw Failure(description: "writing \(temporary): \(String(cString: strerror(errno)))")
      }
      written += count
    }
    fsync(fd)
    close(fd)
    guard rename(temporary, path) == 0 else { throw Failure(description: "cannot rename to \(path)") }
  }

  static func makeDirectories(_ path: String) throws(Failure) {
    var current = ""
    for component in path.split(separator: "/") {
      current += "/" + component
      if mkdir(current, 0o755) != 0 && errno != EEXIST {
        throw Failure(description: "cannot create \(current): \(String(cString: strerror(errno)))")
      }
    }
  }

  /// Names in `directory` (not . or ..), sorted.
  static func list(_ directory: String) -> [String] {
    guard let handle = opendir(directory) else { return [] }
    defer { closedir(handle) }
    var names: [String] = []
    while let entry = readdir(handle) {
      let name = withUnsafeBytes(of: entry.pointee.d_name) { raw in
        String(decoding: raw.prefix { $0 != 0 }, as: UTF8.self)
      }
      if name != "." && name != ".." { names.append(name) }
    }
    return names.sorted()
  }

  static func isDirectory(_ path: String) -> Bool {
    var status = stat()
    return stat(path, &status) == 0 && status.st_mode & S_IFMT == S_IFDIR
  }

  /// Every regular file below `directory`, as paths relative to it.
  static func walk(_ directory: String, prefix: String = "") -> [String] {
    var found: [String] = []
    for name in list(directory) {
      let path = directory + "/" + name
      let relative = prefix.isEmpty ? name : prefix + "/" + name
      if isDirectory(path) { found += walk(path, prefix: relative) } else { found.append(relative) }
    }
    return found
  }
}
