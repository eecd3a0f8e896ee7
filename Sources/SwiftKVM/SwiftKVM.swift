// SwiftKVM: a KVM virtual machine monitor as a Swift library.
//
// `import SwiftKVM` brings in every layer: `VirtualMachine` and its
// configuration (VMM), the x86 boot code (Machine), devices and buses
// (Devices), guest memory (GuestMemory) and the typed KVM wrappers (KVM).
@_exported import Devices
@_exported import DiskImage
@_exported import GuestMemory
@_exported import JSON
@_exported import KVM
@_exported import Machine
@_exported import Monitor
@_exported import Network
@_exported import VMM
