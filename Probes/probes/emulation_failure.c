// Jumps at CPL0 to a guest-physical address with no RAM behind it (inside the
// MMIO hole). KVM cannot fetch, let alone emulate, the instruction there and
// reports KVM_EXIT_INTERNAL_ERROR; skvm must stop with a clear report.
#include "runtime.h"

#define NO_RAM 0xd4000000ull

void kernel_prelude(void) {
  print("emulation_failure: jumping to memory with no RAM behind it\n");
  void (*nowhere)(void) = (void (*)(void))NO_RAM;
  nowhere();
}

int main(unsigned cpu_count) {
  (void)cpu_count;
  print("emulation_failure: returned, which is wrong\n");
  return 1;
}
