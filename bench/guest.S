// The benchmark guest: 16-bit real mode, position-independent within its
// segment, so the same bytes run at CS=0x1000 (skvm, the C floor) and at
// CS=0xF000 from a -bios image (QEMU). It writes 'S' to COM1, does ITERATIONS
// port writes to 0x80 (one exit each), writes 'E', then resets through the i8042.
// The time between the two markers, over ITERATIONS, is the cost of one exit.
#ifndef ITERATIONS
#define ITERATIONS 50000
#endif
  .code16
  .text
  .globl _start
_start:
  mov $0x3f8, %dx
  mov $'S', %al
  out %al, %dx
  mov $ITERATIONS, %ecx
1:
  out %al, $0x80
  dec %ecx
  jnz 1b
  mov $'E', %al
  out %al, %dx
  mov $0xfe, %al
  out %al, $0x64
2:
  hlt
  jmp 2b
