// Loads an empty IDT at CPL0 and raises #UD: no handler, no double-fault
// handler, so the CPU shuts down (a triple fault). skvm must report it and
// exit non-zero, whatever the other vCPUs are doing.
#include "runtime.h"

void kernel_prelude(void) {
  print("triple_fault: loading an empty IDT, then ud2\n");
  struct __attribute__((packed)) {
    uint16_t limit;
    uint64_t base;
  } empty = {0, 0};
  __asm__ volatile("lidt %0; ud2" ::"m"(empty));
}

int main(unsigned cpu_count) {
  (void)cpu_count;
  print("triple_fault: still running, which is wrong\n");
  return 1;
}
