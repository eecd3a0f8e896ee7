/// The version of SwiftKVM.
public enum SwiftKVMVersion {
  public static let current = "0.1.0"
}
