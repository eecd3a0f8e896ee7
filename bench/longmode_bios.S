// Long-mode entry for probe guests under QEMU: loaded into RAM at 0x8000 with -device
// loader (a 5-byte -bios jumps here from the reset vector; KVM on some hosts will not run
// the mode switch out of the ROM). Into protected mode, identity-map the low 4 GiB with
// user-accessible 2 MiB pages (the tables at 0x1000 skvm builds for --flat-entry long),
// enable long mode and jump to the probe at 0x10000 (also put there by -device loader)
// with %rdi = 1 CPU.
  .code16
  .globl _start
_start:
  cli
  xorw %ax, %ax
  movw %ax, %ds
  lgdtl gdt_pointer
  movl %cr0, %eax
  orl $1, %eax
  movl %eax, %cr0
  ljmpl $0x08, $protected

  .code32
protected:
  movw $0x10, %ax
  movw %ax, %ds
  movw %ax, %es
  movw %ax, %ss
  movl $0x1000, %edi            // PML4, PDPT, four page directories: 0x1000–0x6FFF
  xorl %eax, %eax
  movl $(6 * 1024), %ecx
  rep stosl
  movl $0x2007, 0x1000
  movl $0x3007, 0x2000
  movl $0x4007, 0x2008
  movl $0x5007, 0x2010
  movl $0x6007, 0x2018
  movl $0x3000, %edi
  movl $0x87, %eax              // present, writable, user, 2 MiB
  movl $2048, %ecx
1:
  movl %eax, (%edi)
  addl $0x200000, %eax
  addl $8, %edi
  loop 1b
  movl %cr4, %eax
  orl $0x20, %eax               // PAE
  movl %eax, %cr4
  movl $0x1000, %eax
  movl %eax, %cr3
  movl $0xc0000080, %ecx        // EFER.LME
  rdmsr
  orl $0x100, %eax
  wrmsr
  movl %cr0, %eax
  orl $0x80000000, %eax
  movl %eax, %cr0
  ljmpl $0x18, $long

  .code64
long:
  movl $1, %edi
  movl $0x10000, %eax
  jmp *%rax

  .balign 8
gdt:
  .quad 0
  .quad 0x00cf9a000000ffff      // 0x08 code32
  .quad 0x00cf92000000ffff      // 0x10 data
  .quad 0x00af9a000000ffff      // 0x18 code64
gdt_pointer:
  .word gdt_pointer - gdt - 1
  .long gdt
