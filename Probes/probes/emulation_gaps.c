// Ring-0 instructions some KVMs cannot emulate, which a VMM can complete: on a PVM
// host, int3 in long mode and fwait come back as KVM_EXIT_INTERNAL_ERROR, and skvm
// must deliver #BP (as a trap) and skip the fwait. On VMX/SVM both simply run.
#include "runtime.h"

static volatile unsigned breakpoints;

void breakpoint_hook(void) { breakpoints++; }

void kernel_prelude(void) {
  __asm__ volatile("int3" ::: "memory");
  check(breakpoints == 1, "int3 at CPL0 reaches the #BP handler once");
  __asm__ volatile("int3" ::: "memory");
  check(breakpoints == 2, "execution continues after int3");
  __asm__ volatile("fwait" ::: "memory");
  check(1, "fwait at CPL0 completes");
}

int main(unsigned cpu_count) {
  (void)cpu_count;
  return failures() ? 1 : 0;
}
