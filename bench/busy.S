// The monitor benchmark guest: 16-bit real mode, position-independent within its
// segment (CS=0x1000 under skvm, CS=0xF000 from a -bios image under QEMU). The boot
// CPU starts every other vCPU through x2APIC INIT/SIPI into a `jmp .` at 0x8000,
// writes 'R' to COM1, and spins too: every vCPU stays busy until the host stops it.
  .code16
  .text
  .globl _start
_start:
  cli
  xor %ax, %ax
  mov %ax, %es
  movw $0xfeeb, %es:0x8000     // the APs' code: jmp .
  mov $0x1b, %ecx              // IA32_APIC_BASE: enable the APIC in x2APIC mode
  rdmsr
  or $0xc00, %eax
  wrmsr
  mov $0x830, %ecx             // x2APIC ICR
  xor %edx, %edx
  mov $0xc4500, %eax           // INIT, assert, all excluding self
  wrmsr
  mov $0xc4608, %eax           // SIPI, vector 0x08 (0x8000), all excluding self
  wrmsr
  wrmsr
  mov $0x3f8, %dx
  mov $'R', %al
  out %al, %dx
1:
  jmp 1b
