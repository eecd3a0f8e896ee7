import Synchronization
import Testing

@testable import Devices

final class RecordingLine: InterruptLine {
  private let levels = Mutex<[Bool]>([])
  var history: [Bool] { levels.withLock { $0 } }
  func set(high: Bool) { levels.withLock { $0.append(high) } }
}

@Suite("UART interrupts and input")
struct SerialInterruptTests {
  @Test("Received bytes raise the data interrupt; reading them lowers it")
  func receiveInterrupt() {
    let line = RecordingLine()
    let port = SerialPort(output: CapturedConsoleOutput(), interrupt: line)
    port.write(offset: 1, width: 1, value: 0x01)  // IER: received data
    #expect(port.receive(Array("ab".utf8)) == 2)
    #expect(line.history == [true])
    #expect(port.read(offset: 2, width: 1) & 0x0F == 0x04, "IIR: received data available")
    #expect(port.read(offset: 5, width: 1) & 0x01 == 1, "LSR: data ready")
    #expect(port.read(offset: 0, width: 1) == UInt64(UInt8(ascii: "a")))
    #expect(port.read(offset: 0, width: 1) == UInt64(UInt8(ascii: "b")))
    #expect(line.history == [true, false])
    #expect(port.read(offset: 5, width: 1) & 0x01 == 0)
  }

  @Test("Enabling the transmitter-empty interrupt raises it; reading IIR acknowledges it")
  func transmitterInterrupt() {
    let line = RecordingLine()
    let port = SerialPort(output: CapturedConsoleOutput(), interrupt: line)
    port.write(offset: 1, width: 1, value: 0x02)
    #expect(line.history == [true])
    #expect(port.read(offset: 2, width: 1) & 0x0F == 0x02)
    #expect(line.history == [true, false])
    port.write(offset: 0, width: 1, value: 0x41)  // a write empties the THR again at once
    #expect(line.history == [true, false, true])
  }

  @Test("OUT2 gates the interrupt output")
  func out2Gates() {
    let line = RecordingLine()
    let port = SerialPort(output: CapturedConsoleOutput(), interrupt: line)
    port.write(offset: 4, width: 1, value: 0x00)  // MCR without OUT2
    port.write(offset: 1, width: 1, value: 0x01)
    _ = port.receive([0x31])
    #expect(line.history.isEmpty)
    port.write(offset: 4, width: 1, value: 0x08)
    #expect(line.history == [true])
  }

  @Test("Loopback reflects MCR in MSR (Linux's autoconfig test) and sends bytes to the receiver")
  func loopback() {
    let output = CapturedConsoleOutput()
    let port = SerialPort(output: output)
    port.write(offset: 4, width: 1, value: 0x1A)  // LOOP | OUT2 | RTS
    #expect(port.read(offset: 6, width: 1) & 0xF0 == 0x90)
    port.write(offset: 0, width: 1, value: 0x55)
    #expect(output.text.isEmpty)
    #expect(port.read(offset: 0, width: 1) == 0x55)
  }

  @Test("The receive buffer is bounded; FCR can clear it")
  func bounded() {
    let port = SerialPort(output: CapturedConsoleOutput())
    #expect(port.receive([UInt8](repeating: 1, count: SerialPort.receiveCapacity + 10)) == SerialPort.receiveCapacity)
    #expect(port.receive([1]) == 0)
    port.write(offset: 2, width: 1, value: 0x03)  // FIFO on, clear receiver
    #expect(port.read(offset: 5, width: 1) & 0x01 == 0)
  }
}

@Suite("CMOS clock and ACPI PM")
struct ClockAndPowerTests {
  @Test("The RTC reads the clock in BCD and in binary mode; a guest can set the time")
  func rtc() {
    // 2026-11-25 12:34:56 UTC
    let clock = CMOSClock(now: { 1_795_610_096 })
    func read(_ register: UInt64) -> UInt64 {
      clock.write(offset: 0, width: 1, value: register)
      return clock.read(offset: 1, width: 1)
    }
    #expect(read(0x00) == 0x56 && read(0x02) == 0x34 && read(0x04) == 0x12)
    #expect(read(0x07) == 0x25 && read(0x08) == 0x11 && read(0x09) == 0x26 && read(0x32) == 0x20)
    clock.write(offset: 0, width: 1, value: 0x0B)
    clock.write(offset: 1, width: 1, value: 0x06)  // binary, 24 h
    #expect(read(0x00) == 56 && read(0x09) == 26)
    clock.write(offset: 0, width: 1, value: 0x09)
    clock.write(offset: 1, width: 1, value: 30)  // the guest sets the year to 2030
    #expect(read(0x09) == 30 && read(0x08) == 11)
    #expect(read(0x0D) == 0x80, "RTC valid")
  }

  @Test("SLP_TYP=5 with SLP_EN powers off; other sleep types do not")
  func softOff() {
    let control = RecordingControl()
    let pm = ACPIPowerManagement(control: control, interrupt: RecordingLine())
    pm.write(offset: 4, width: 2, value: UInt64(3 << 10 | 1 << 13))
    #expect(control.all.isEmpty)
    #expect(pm.read(offset: 4, width: 2) & 1 == 1, "SCI_EN reads as set")
    pm.write(offset: 4, width: 2, value: UInt64(5 << 10 | 1 << 13))
    #expect(control.all == [.powerOff(source: "ACPI sleep state S5 (PM1a control)")])
  }

  @Test("The power button raises the SCI once enabled, and clearing its status lowers it")
  func powerButton() {
    let line = RecordingLine()
    let pm = ACPIPowerManagement(control: RecordingControl(), interrupt: line)
    pm.pressPowerButton()
    #expect(line.history.isEmpty, "PWRBTN_EN not set yet")
    pm.write(offset: 2, width: 2, value: 1 << 8)  // PWRBTN_EN
    #expect(line.history == [true])
    #expect(pm.read(offset: 0, width: 2) & (1 << 8) != 0)
    pm.write(offset: 0, width: 2, value: 1 << 8)  // write 1 to clear
    #expect(line.history == [true, false])
  }

  @Test("pvpanic reports a panic when bit 0 is written")
  func panic() {
    let control = RecordingControl()
    let device = PanicNotifier(control: control)
    #expect(device.read(offset: 0, width: 1) == 0x3)
    device.write(offset: 0, width: 1, value: 2)
    #expect(control.all.isEmpty)
    device.write(offset: 0, width: 1, value: 1)
    #expect(control.all == [.guestPanicked])
  }
}
