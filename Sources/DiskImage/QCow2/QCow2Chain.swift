/// Changing an image's place in its backing chain without changing what the guest sees.
extension QCow2Image {
  /// `qemu-img commit`: writes every cluster this image holds into its backing file, then
  /// (unless `keepContents`) empties this image so it reads through to the backing again.
  public func commit(keepContents: Bool = false) throws(DiskImageError) {
    let header = self.header
    guard let name = header.backingFile else {
      throw .invalid(path: path, reason: "has no backing file to commit to")
    }
    // The backing image is opened (read-only, lock shared) with this one: close it so it can
    // be opened for writing. Commit reads only this image's own clusters.
    backing?.close()
    let target = try DiskImage.open(
      DiskImage.resolve(backing: name, of: path), format: header.backingFormat.flatMap(DiskImageFormat.init),
      writable: true)
    let end = min(size, target.size)
    try forEachCluster(below: end) { position, count throws(DiskImageError) in
      if try !isUnallocated(at: position) { try target.write(try read(count: count, at: position), at: position) }
    }
    try target.flush()
    if !keepContents { try unmapAll() }
  }

  /// `qemu-img rebase`: makes `name` (or none) the backing file. Unless `unsafe`, first copies
  /// into this image, wherever it has nothing of its own, the old backing's bytes that the
  /// new backing would read differently.
  public func rebase(onto name: String?, format: DiskImageFormat?, unsafe: Bool = false) throws(DiskImageError) {
    var format = format
    if !unsafe {
      let newBacking = try name.map { name throws(DiskImageError) in
        try DiskImage.open(DiskImage.resolve(backing: name, of: path), format: format)
      }
      if let name, format == nil { format = try DiskImage.detectFormat(DiskImage.resolve(backing: name, of: path)) }
      try forEachCluster(below: size) { position, count throws(DiskImageError) in
        guard try isUnallocated(at: position) else { return }
        let old = try Self.readPadded(backing, count: count, at: position)
        if old != (try Self.readPadded(newBacking, count: count, at: position)) { try write(old, at: position) }
      }
      try flush()
    }
    try setBacking(file: name, format: format)
  }

  private func forEachCluster(
    below end: UInt64, _ body: (UInt64, Int) throws(DiskImageError) -> Void
  ) throws(DiskImageError) {
    let clusterSize = header.clusterSize
    var position: UInt64 = 0
    while position < end {
      let count = Int(min(clusterSize, end - position))
      try body(position, count)
      position += UInt64(count)
    }
  }

  /// `count` bytes of `image` at `position`, zeros past its end (or for no image at all).
  private static func readPadded(_ image: (any BlockBackend)?, count: Int, at position: UInt64)
    throws(DiskImageError) -> [UInt8]
  {
    guard let image, position < image.size else { return [UInt8](repeating: 0, count: count) }
    let available = Int(min(UInt64(count), image.size - position))
    return try image.read(count: available, at: position) + [UInt8](repeating: 0, count: count - available)
  }
}
