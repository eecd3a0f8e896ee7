/// A table laid out as virsh's (a leading space, columns three spaces apart, a rule of dashes).
struct Table {
  let header: [String]
  var rows: [[String]] = []

  init(_ header: String...) { self.header = header }

  mutating func add(_ row: String...) { rows.append(row) }

  var text: String {
    var widths = header.map(\.count)
    for row in rows {
      for (index, cell) in row.enumerated() where index < widths.count {
        widths[index] = max(widths[index], cell.count)
      }
    }
    func line(_ cells: [String]) -> String {
      var text = ""
      for (index, cell) in cells.enumerated() {
        let last = index == cells.count - 1
        text += " " + cell + (last ? "" : String(repeating: " ", count: widths[index] - cell.count + 2))
      }
      return text
    }
    let width = widths.reduce(0, +) + 3 * widths.count
    var lines = [line(header), String(repeating: "-", count: width)]
    lines += rows.map(line)
    return lines.joined(separator: "\n") + "\n"
  }
}
