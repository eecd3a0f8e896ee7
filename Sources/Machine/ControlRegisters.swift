/// Bits of the x86 control registers and EFER that boot code sets.
public enum ControlRegisters {
  public static let cr0ProtectionEnable: UInt64 = 1 << 0
  public static let cr0MonitorCoprocessor: UInt64 = 1 << 1
  public static let cr0ExtensionType: UInt64 = 1 << 4
  public static let cr0NumericError: UInt64 = 1 << 5
  public static let cr0WriteProtect: UInt64 = 1 << 16
  public static let cr0Paging: UInt64 = 1 << 31
  public static let cr4PhysicalAddressExtension: UInt64 = 1 << 5
  public static let cr4OSFXSR: UInt64 = 1 << 9
  public static let cr4OSXMMException: UInt64 = 1 << 10
  public static let eferLongModeEnable: UInt64 = 1 << 8
  public static let eferLongModeActive: UInt64 = 1 << 10
  /// RFLAGS bit 1 is always set.
  public static let rflagsReserved: UInt64 = 1 << 1
}
