import ArgumentParser
import DiskImage

/// `skvm img compare [-f FMT] [-F FMT] [-s] A B`: 0 identical, 1 different, 2 an error.
struct ImgCompare: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "compare", abstract: "Check whether two images have the same contents (qemu-img compare).")

  @Option(name: .short, help: "Format of the first image.")
  var f: DiskImageFormat?

  @Option(name: .customShort("F"), help: "Format of the second image.")
  var secondFormat: DiskImageFormat?

  @Flag(
    name: .customShort("U"),
    help: "Force share: read an image another process has open for writing (it may change meanwhile).")
  var forceShare = false

  @Flag(name: .short, help: "Strict: images of different sizes differ.")
  var s = false

  @Argument(help: "The first image.")
  var first: String

  @Argument(help: "The second image.")
  var second: String

  func run() throws {
    let a: any BlockBackend
    let b: any BlockBackend
    do {
      a = try DiskImage.open(first, format: f, forceShare: forceShare)
      b = try DiskImage.open(second, format: secondFormat, forceShare: forceShare)
    } catch {
      printError("skvm img: Could not open image: \(error)")
      throw ExitCode(2)
    }
    if s && a.size != b.size {
      print("Strict mode: Image size mismatch!")
      throw ExitCode(1)
    }
    let chunk = 1 << 20
    let size = max(a.size, b.size)
    var offset: UInt64 = 0
    do {
      while offset < size {
        let count = Int(min(UInt64(chunk), size - offset))
        let left = offset < a.size ? try a.read(count: Int(min(UInt64(count), a.size - offset)), at: offset) : []
        let right = offset < b.size ? try b.read(count: Int(min(UInt64(count), b.size - offset)), at: offset) : []
        for index in 0..<count {
          let x = index < left.count ? left[index] : 0
          let y = index < right.count ? right[index] : 0
          if x != y {
            print("Content mismatch at offset \(offset + UInt64(index))!")
            throw ExitCode(1)
          }
        }
        offset += UInt64(count)
      }
    } catch let error as ExitCode {
      throw error
    } catch {
      printError("skvm img: error while comparing: \(error)")
      throw ExitCode(2)
    }
    print("Images are identical.")
  }
}
