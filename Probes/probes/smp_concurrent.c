// Every vCPU hammers the host's counting device (port 0x770) at once, then the
// boot CPU reads the total back. Exercises the exit path on all vCPU threads together.
#include "runtime.h"

#define COUNTER_PORT 0x770
#define WRITES_PER_CPU 2000

static volatile unsigned finished;

static void hammer(void) {
  for (int i = 0; i < WRITES_PER_CPU; i++) outb(COUNTER_PORT, 1);
  __atomic_add_fetch(&finished, 1, __ATOMIC_SEQ_CST);
}

void ap_main(unsigned cpu_index) {
  (void)cpu_index;
  hammer();
}

int main(unsigned cpu_count) {
  unsigned online = start_application_processors();
  check(online == cpu_count, "every vCPU online");
  hammer();
  while (finished < online) cpu_relax();
  uint32_t total = inl(COUNTER_PORT);
  print("counter ");
  print_dec(total);
  print("\n");
  check(total == online * WRITES_PER_CPU, "every write counted once");
  return failures() ? 1 : 0;
}
