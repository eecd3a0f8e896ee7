// The smallest probe: prints from CPL3 and exits with success.
#include "runtime.h"

int main(unsigned cpu_count) {
  print("probe hello: running at CPL3 with ");
  print_dec(cpu_count);
  print(" vCPU(s)\n");
  uint16_t cs;
  __asm__ volatile("mov %%cs, %0" : "=r"(cs));
  check((cs & 3) == 3, "running at CPL3");
  return failures() ? 1 : 0;
}
