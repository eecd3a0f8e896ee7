/// Orders kernel modules so each comes after the modules it depends on, reading each
/// `.ko`'s `depends=` field from its `.modinfo` section (the Debian package ships no modules.dep).
enum ModuleOrder {
  /// Paths (relative to `root`) of `wanted` and their dependencies, dependencies first.
  /// Wanted modules the kernel does not have are left out; missing dependencies are an error.
  static func resolve(_ wanted: [String], in root: String) throws -> [String] {
    var paths: [String: String] = [:]
    for file in Files.walk(root) where file.hasSuffix(".ko") {
      let name = String(file.split(separator: "/").last?.dropLast(3) ?? "")
      paths[normalized(name)] = file
    }
    var order: [String] = []
    func visit(_ name: String, required: Bool) throws {
      guard let path = paths[normalized(name)] else {
        if required { throw GuestKit.Failure(description: "kernel module \(name) is missing from the kernel package") }
        return
      }
      if order.contains(path) { return }
      for dependency in try dependencies(of: root + "/" + path) { try visit(dependency, required: true) }
      order.append(path)
    }
    for name in wanted { try visit(name, required: false) }
    return order
  }

  static func normalized(_ name: String) -> String { name.replacingDashes }

  /// The `depends=` list in a module file.
  static func dependencies(of path: String) throws -> [String] {
    let bytes = try Files.read(path)
    let marker = Array("depends=".utf8)
    var index = 0
    while index + marker.count < bytes.count {
      if (index == 0 || bytes[index - 1] == 0) && bytes[index..<index + marker.count].elementsEqual(marker) {
        let start = index + marker.count
        let end = bytes[start...].firstIndex(of: 0) ?? bytes.count
        return String(decoding: bytes[start..<end], as: UTF8.self).split(separator: ",").map(String.init)
      }
      index += 1
    }
    return []
  }
}

extension String {
  var replacingDashes: String { String(map { $0 == "-" ? "_" : $0 }) }
}
