// Exception entry stubs for vectors 0–31: push a uniform frame and call
// runtime_exception(frame), which either handles the exception (a probe's
// breakpoint_hook for #BP) and returns here to iretq, or reports it and stops.
  .text
  .code64

.macro STUB vector, has_error_code
  .globl exception_stub_\vector
exception_stub_\vector:
  .if \has_error_code == 0
  pushq $0
  .endif
  pushq $\vector
  jmp exception_common
.endm

STUB 0, 0
STUB 1, 0
STUB 2, 0
STUB 3, 0
STUB 4, 0
STUB 5, 0
STUB 6, 0
STUB 7, 0
STUB 8, 1
STUB 9, 0
STUB 10, 1
STUB 11, 1
STUB 12, 1
STUB 13, 1
STUB 14, 1
STUB 15, 0
STUB 16, 0
STUB 17, 1
STUB 18, 0
STUB 19, 0
STUB 20, 0
STUB 21, 1
STUB 22, 0
STUB 23, 0
STUB 24, 0
STUB 25, 0
STUB 26, 0
STUB 27, 0
STUB 28, 0
STUB 29, 1
STUB 30, 1
STUB 31, 0
STUB 64, 0                    // RUNTIME_INTERRUPT_VECTOR: a device interrupt (the LAPIC timer)

exception_common:
  // Frame: vector, error code, RIP, CS, RFLAGS, RSP, SS; save the general registers below it.
  pushq %rax
  pushq %rbx
  pushq %rcx
  pushq %rdx
  pushq %rsi
  pushq %rdi
  pushq %rbp
  pushq %r8
  pushq %r9
  pushq %r10
  pushq %r11
  pushq %r12
  pushq %r13
  pushq %r14
  pushq %r15
  movq %rsp, %rdi
  movq %rsp, %rbx
  andq $-16, %rsp
  call runtime_exception      // returns only when the exception was handled
  movq %rbx, %rsp
  popq %r15
  popq %r14
  popq %r13
  popq %r12
  popq %r11
  popq %r10
  popq %r9
  popq %r8
  popq %rbp
  popq %rdi
  popq %rsi
  popq %rdx
  popq %rcx
  popq %rbx
  popq %rax
  addq $16, %rsp              // vector and error code
  iretq

  .section .rodata
  .balign 8
  .globl exception_stubs
exception_stubs:
  .irp v, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31
  .quad exception_stub_\v
  .endr
  .globl interrupt_stub
interrupt_stub:
  .quad exception_stub_64
