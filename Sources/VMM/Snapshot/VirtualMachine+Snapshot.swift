import CKVM
import Devices
import KVM

#if canImport(FoundationEssentials)
  import FoundationEssentials
#else
  import Foundation
#endif

/// How a restored machine's RAM comes from its snapshot file.
public enum RestoreMode: String, Sendable, Codable, CaseIterable {
  /// Mapped copy-on-write: pages load when the guest first touches them; the file must stay.
  case mapped
  /// Copied into the machine's own memory at start: the file may be deleted afterwards.
  case copy
}

extension VirtualMachine {
  /// Writes the paused machine to a snapshot file: every vCPU, the in-kernel devices, every
  /// registered device, and guest RAM. The machine must be paused (its devices are then
  /// quiesced, their requests in flight completed); it stays paused.
  public func saveSnapshot(to path: String) throws(VirtualMachineError) {
    guard isPaused else { throw .snapshot("the machine must be paused to be saved (QMP stop)") }
    try SnapshotFile.write(to: path, state: try captureState().json(), memory: memory)
  }

  /// The paused machine's state apart from RAM.
  func captureState() throws(VirtualMachineError) -> MachineState {
    do {
      let msrIndices = try kvm.msrIndexList()
      let xsaveSize = Int(vm.checkExtension(Int32(KVM_CAP_XSAVE2)))
      let record = MachineRecord(
        formatVersion: MachineState.formatVersion, configuration: configuration,
        vcpus: try vcpus.map { vcpu throws(KVMError) in
          try VCPUState.capture(vcpu, msrIndices: msrIndices, xsaveSize: xsaveSize)
        },
        kernel: try KernelDeviceState.capture(vm))
      return MachineState(record: record, devices: devices)
    } catch {
      throw .snapshot("cannot read the machine's state from KVM: \(error)")
    }
  }

  /// Runs the state coders once on throwaway values while the machine runs (see
  /// `MachineState.warmUp`): device states are read as a save would, without side effects.
  func warmUpStateCoding() {
    MachineState.warmUp(configuration: configuration, devices: devices)
  }

  /// Restores the state after the RAM: the in-kernel devices, then every vCPU, then every
  /// registered device (which may re-drive interrupt lines into the restored irqchip).
  func restoreState(from snapshot: SnapshotFile) throws(VirtualMachineError) {
    let record = snapshot.record
    guard record.vcpus.count == vcpus.count else {
      throw .snapshot("\(snapshot.path) holds \(record.vcpus.count) vCPUs; this machine has \(vcpus.count)")
    }
    try record.kernel.restore(into: vm)
    let xsaveSize = Int(vm.checkExtension(Int32(KVM_CAP_XSAVE2)))
    for (state, vcpu) in zip(record.vcpus, vcpus) { try state.restore(into: vcpu, xsaveSize: xsaveSize) }
    try snapshot.restoreDevices(into: devices)
  }
}
