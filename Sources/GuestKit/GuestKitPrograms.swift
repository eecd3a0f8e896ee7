import Glibc

extension GuestKit {
  /// The default guest's initramfs with host programs added (`skvm kit --add iperf3`): each
  /// program at its host path with the shared libraries `ldd` names (and the dynamic loader),
  /// appended to the kit's initramfs as a second archive, which Linux unpacks over the first.
  /// Cached beside the kit, keyed by the programs and the libraries' sizes and times.
  public func initrd(adding programs: [String]) throws(Failure) -> String {
    guard !programs.isEmpty else { return initrdPath }
    var files: [String] = []
    for program in programs {
      let path = try Self.locate(program)
      for file in [path] + (try Self.sharedLibraries(of: path)) where !files.contains(file) { files.append(file) }
    }
    var key = initrdPath
    for file in files {
      var status = stat()
      guard stat(file, &status) == 0 else { throw Failure(description: "cannot read \(file): \(Self.errorText())") }
      key += "|\(file):\(status.st_size):\(status.st_mtim.tv_sec)"
    }
    let output = Self.cacheRoot + "/initrd-with-\(Self.fingerprint(key)).gz"
    if Files.exists(output) { return output }
    var archive = CPIOArchive()
    var directories: Set<String> = []
    func failure(_ error: any Error) -> Failure {
      Failure(description: "cannot build an initramfs with \(programs.joined(separator: ", ")): \(error)")
    }
    do throws(Files.Failure) {
      for file in files {
        let relative = String(file.drop { $0 == "/" })
        let parents = relative.split(separator: "/").dropLast()
        for depth in parents.indices {
          let directory = parents[...depth].joined(separator: "/")
          if directories.insert(directory).inserted { archive.addDirectory(directory) }
        }
        archive.addFile(relative, content: try Files.read(file), mode: 0o755)
      }
    } catch {
      throw failure(error)
    }
    let extra: [UInt8]
    do { extra = try Gzip.compress(archive.finished()) } catch { throw failure(error) }
    do { try Files.writeAtomically(try Files.read(initrdPath) + extra, to: output) } catch { throw failure(error) }
    return output
  }

  /// `program`'s path: as given when it has a '/', else the first match on PATH.
  static func locate(_ program: String) throws(Failure) -> String {
    if program.contains("/") {
      guard Files.exists(program) else { throw Failure(description: "\(program) does not exist") }
      return program
    }
    let search = ProcessEnvironment()["PATH"] ?? "/usr/local/bin:/usr/bin:/bin"
    for directory in search.split(separator: ":") where access("\(directory)/\(program)", X_OK) == 0 {
      return "\(directory)/\(program)"
    }
    throw Failure(
      description:
        "no program '\(program)' on PATH: install it first (e.g. apt-get install \(program)) or give its path")
  }

  /// The shared objects `ldd` lists for `path` (none for a static program).
  static func sharedLibraries(of path: String) throws(Failure) -> [String] {
    let listing: String
    do { listing = try HostCommand.run(["ldd", path]) } catch {
      // ldd fails on a static program ("not a dynamic executable"): nothing to add.
      return []
    }
    var libraries: [String] = []
    for line in listing.split(separator: "\n") {
      let words = line.split(separator: " ").map(String.init)
      if let arrow = words.firstIndex(of: "=>"), arrow + 1 < words.count, words[arrow + 1].hasPrefix("/") {
        libraries.append(words[arrow + 1])
      } else if let first = words.first?.trimmingPrefix("\t"), first.hasPrefix("/") {
        libraries.append(String(first))
      } else if line.contains("not found") {
        throw Failure(description: "\(path) needs a library this host lacks: \(line)")
      }
    }
    return libraries
  }

  /// A short hex fingerprint of `text` (FNV-1a, 64 bits): names a cached file, nothing more.
  static func fingerprint(_ text: String) -> String {
    var hash: UInt64 = 0xcbf2_9ce4_8422_2325
    for byte in text.utf8 {
      hash ^= UInt64(byte)
      hash = hash &* 0x100_0000_01b3
    }
    return String(hash, radix: 16)
  }

  private static func errorText() -> String { String(cString: strerror(errno)) }
}
