/// What an incoming migration built or opened before its switch-over ended, for the restore
/// to use: the KVM side (VM, RAM mapping, vCPUs) built while RAM streamed in, and the disks,
/// opened and locked as soon as the source let go of them (while it still read and sent the
/// machine's state). The restore uses each part that fits the configuration it restores.
public struct IncomingMachineParts: Sendable {
  let core: MachineCore?
  let disks: [OpenedDisk]?
}
