// The built-in hello guest: 16-bit real mode, entered at CS=0x1000, IP=0.
// Prints a greeting on COM1 (polling LSR before each byte), then pulses the
// i8042 reset line, which ends `skvm run` with status 0. Its assembled bytes
// are embedded in Sources/VMM/BuiltInGuest.swift; a test checks they match.
  .code16
  .text
  .globl _start
_start:
  mov %cs, %ax
  mov %ax, %ds
  mov $message, %si
next_byte:
  lodsb
  test %al, %al
  jz reset
  mov %al, %bl
wait_for_transmitter:
  mov $0x3fd, %dx          // COM1 line status register
  in %dx, %al
  test $0x20, %al          // transmitter holding register empty?
  jz wait_for_transmitter
  mov $0x3f8, %dx          // COM1 transmit register
  mov %bl, %al
  out %al, %dx
  jmp next_byte
reset:
  mov $0xfe, %al           // i8042: pulse the reset line
  out %al, $0x64
  hlt
  jmp reset
message:
  .asciz "Hello from a SwiftKVM guest: 16-bit real mode, COM1, i8042 reset.\r\n"
