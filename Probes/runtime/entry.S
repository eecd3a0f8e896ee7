// Probe runtime: entry points. The boot CPU arrives at _start in 64-bit mode,
// ring 0 (skvm's long-mode flat entry); application processors arrive at
// ap_trampoline in real mode after INIT/SIPI. Both set up their CPU at CPL0
// and drop to CPL3 with IOPL=3 through runtime_enter_user.

#define KERNEL_STACK_SHIFT 14   // 16 KiB per CPU
#define USER_STACK_SHIFT 14

#define SELECTOR_CODE32 0x08
#define SELECTOR_DATA 0x10
#define SELECTOR_CODE64 0x18
#define SELECTOR_USER_DATA 0x23
#define SELECTOR_USER_CODE64 0x2b

  .section .text.entry, "ax"
  .code64
  .globl _start
_start:
  cli
  movq %rdi, runtime_cpu_count(%rip)
  movq %cr3, %rax
  movl %eax, runtime_boot_cr3(%rip)
  leaq kernel_stacks + (1 << KERNEL_STACK_SHIFT)(%rip), %rsp
  xorl %edi, %edi
  call runtime_cpu_init
  call kernel_prelude
  xorl %edi, %edi
  jmp runtime_enter_user

// runtime_enter_user(cpu index in %edi): iretq to runtime_user_start at CPL3.
  .text
  .globl runtime_enter_user
runtime_enter_user:
  movl %edi, %eax
  incq %rax
  shlq $USER_STACK_SHIFT, %rax
  leaq user_stacks(%rip), %rcx
  addq %rcx, %rax
  pushq $SELECTOR_USER_DATA
  pushq %rax
  pushq runtime_user_rflags(%rip) // IOPL=3; interrupts on only for probes with an interrupt_hook
  pushq $SELECTOR_USER_CODE64
  leaq runtime_user_start(%rip), %rax
  pushq %rax
  iretq

// runtime_load_segments(): reload CS and the data segments after lgdt.
  .globl runtime_load_segments
runtime_load_segments:
  movw $SELECTOR_DATA, %ax
  movw %ax, %ds
  movw %ax, %es
  movw %ax, %ss
  movw %ax, %fs
  movw %ax, %gs
  popq %rax
  pushq $SELECTOR_CODE64
  pushq %rax
  lretq

// The SIPI target: real mode → protected mode → long mode, then the common path.
  .section .text.trampoline, "ax"
  .code16
  .globl ap_trampoline
ap_trampoline:
  cli
  movw %cs, %ax
  movw %ax, %ds
  lgdtl trampoline_gdt_pointer - ap_trampoline
  movl %cr0, %eax
  orl $1, %eax
  movl %eax, %cr0
  ljmpl $SELECTOR_CODE32, $ap_protected_mode

  .balign 8
trampoline_gdt_pointer:
  .word runtime_gdt_end - runtime_gdt - 1
  .long runtime_gdt

  .code32
ap_protected_mode:
  movw $SELECTOR_DATA, %ax
  movw %ax, %ds
  movw %ax, %es
  movw %ax, %ss
  movl %cr4, %eax
  orl $0x20, %eax               // PAE
  movl %eax, %cr4
  movl runtime_boot_cr3, %eax
  movl %eax, %cr3
  movl $0xc0000080, %ecx        // EFER
  rdmsr
  orl $0x100, %eax              // LME
  wrmsr
  movl %cr0, %eax
  orl $0x80000000, %eax         // PG
  movl %eax, %cr0
  ljmpl $SELECTOR_CODE64, $ap_long_mode

  .code64
ap_long_mode:
  movl $1, %eax
  lock xaddl %eax, runtime_next_cpu(%rip)
  movl %eax, %ebx               // cpu index, kept across the call
  leal 1(%rax), %eax
  shlq $KERNEL_STACK_SHIFT, %rax
  leaq kernel_stacks(%rip), %rsp
  addq %rax, %rsp
  movl %ebx, %edi
  call runtime_cpu_init
  movl %ebx, %edi
  jmp runtime_enter_user

// The GDT shared by all CPUs; each CPU writes its own TSS descriptor at 0x30 + 16 * index.
  .data
  .balign 16
  .globl runtime_gdt, runtime_gdt_end
runtime_gdt:
  .quad 0
  .quad 0x00cf9a000000ffff      // 0x08 code32, ring 0
  .quad 0x00cf92000000ffff      // 0x10 data, ring 0
  .quad 0x00af9a000000ffff      // 0x18 code64, ring 0
  .quad 0x00cff2000000ffff      // 0x20 data, ring 3
  .quad 0x00affa000000ffff      // 0x28 code64, ring 3
  .fill 16, 8, 0                // 0x30: 8 TSS descriptors, 16 bytes each
runtime_gdt_end:

  .globl runtime_next_cpu, runtime_boot_cr3, runtime_cpu_count
runtime_next_cpu: .long 1
runtime_boot_cr3: .long 0
  .balign 8
runtime_cpu_count: .quad 1

  .bss
  .balign 4096
  .globl kernel_stacks, user_stacks
kernel_stacks: .skip 8 << KERNEL_STACK_SHIFT
user_stacks: .skip 8 << USER_STACK_SHIFT
