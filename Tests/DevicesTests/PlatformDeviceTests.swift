import Synchronization
import Testing

@testable import Devices

final class RecordingControl: MachineControl {
  private let requests = Mutex<[StopRequest]>([])
  var all: [StopRequest] { requests.withLock { $0 } }
  func requestStop(_ request: StopRequest) { requests.withLock { $0.append(request) } }
}

@Suite("Platform devices")
struct PlatformDeviceTests {
  @Test("Serial: THR goes to the console, LSR says idle, DLAB switches to the divisor, scratch holds")
  func serial() {
    let output = CapturedConsoleOutput()
    let port = SerialPort(output: output)
    port.write(offset: 0, width: 1, value: UInt64(UInt8(ascii: "h")))
    port.write(offset: 0, width: 1, value: UInt64(UInt8(ascii: "i")))
    #expect(output.text == "hi")
    #expect(port.read(offset: 5, width: 1) & 0x60 == 0x60)
    port.write(offset: 3, width: 1, value: 0x83)  // DLAB on
    port.write(offset: 0, width: 1, value: 0x01)
    port.write(offset: 1, width: 1, value: 0x00)
    #expect(port.snapshot.divisorLatch == 1)
    #expect(port.read(offset: 0, width: 1) == 0x01)
    #expect(output.text == "hi", "divisor writes must not transmit")
    port.write(offset: 3, width: 1, value: 0x03)
    port.write(offset: 7, width: 1, value: 0x5A)
    #expect(port.read(offset: 7, width: 1) == 0x5A)
    #expect(port.read(offset: 2, width: 1) & 0x01 == 0x01, "IIR: no interrupt pending")
  }

  @Test("Captured console output keeps only the newest bytes")
  func capturedLimit() {
    let output = CapturedConsoleOutput(limit: 4)
    for byte in Array("abcdef".utf8) { output.write(byte: byte) }
    #expect(output.text == "cdef")
  }

  @Test("i8042: self-test, command byte, idle status and the reset line")
  func i8042() {
    let control = RecordingControl()
    let controller = I8042Controller(control: control)
    #expect(controller.read(offset: 4, width: 1) & 0x02 == 0, "input buffer empty: a guest never waits")
    controller.write(offset: 4, width: 1, value: 0xAA)
    #expect(controller.read(offset: 4, width: 1) & 0x01 == 1)
    #expect(controller.read(offset: 0, width: 1) == 0x55)
    controller.write(offset: 4, width: 1, value: 0x60)
    controller.write(offset: 0, width: 1, value: 0x47)
    controller.write(offset: 4, width: 1, value: 0x20)
    #expect(controller.read(offset: 0, width: 1) == 0x47)
    #expect(control.all.isEmpty)
    controller.write(offset: 4, width: 1, value: 0xFE)
    #expect(control.all == [.reset(source: "i8042 reset line (port 0x64, 0xFE)")])
  }

  @Test("Port 0xCF9 resets only when the reset-CPU bit is written")
  func resetControl() {
    let control = RecordingControl()
    let register = ResetControlRegister(control: control)
    register.write(offset: 0, width: 1, value: 0x02)
    #expect(control.all.isEmpty)
    #expect(register.read(offset: 0, width: 1) == 0x02)
    register.write(offset: 0, width: 1, value: 0x06)
    #expect(control.all.count == 1)
  }

  @Test("Debug exit follows QEMU's (value << 1) | 1 convention")
  func debugExit() {
    let control = RecordingControl()
    DebugExitPort(control: control).write(offset: 0, width: 4, value: 0x21)
    #expect(control.all == [.debugExit(value: 0x21)])
    #expect(StopRequest.debugExitStatus(0) == 1)
    #expect(StopRequest.debugExitStatus(0x21) == 0x43)
  }

  @Test("Port 0x80 keeps the last POST code")
  func postCode() {
    let port = PostCodePort()
    port.write(offset: 0, width: 1, value: 0x1234)
    #expect(port.read(offset: 0, width: 1) == 0x34)
  }
}
