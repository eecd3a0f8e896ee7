// An exception at CPL3 reaches the runtime's ring-0 handler, which reports it
// on COM1 and exits with RUNTIME_EXIT_EXCEPTION: the probe runtime's own safety net.
#include "runtime.h"

int main(unsigned cpu_count) {
  (void)cpu_count;
  print("user_exception: executing ud2 at CPL3\n");
  __asm__ volatile("ud2");
  return 1;
}
