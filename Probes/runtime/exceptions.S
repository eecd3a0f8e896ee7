// Exception entry stubs for vectors 0–31: push a uniform frame and call
// runtime_exception(frame), which reports the fault and stops the machine.
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

exception_common:
  // Frame on the stack now: vector, error code, RIP, CS, RFLAGS, RSP, SS.
  movq %rsp, %rdi
  andq $-16, %rsp
  call runtime_exception
1:
  cli
  hlt
  jmp 1b

  .section .rodata
  .balign 8
  .globl exception_stubs
exception_stubs:
  .irp v, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31
  .quad exception_stub_\v
  .endr
