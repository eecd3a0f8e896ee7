// Keeps every vCPU busy at CPL3 forever, for monitor tests and benches: the boot CPU
// prints "tick N" on COM1 every few million iterations, so a paused machine is one
// whose ticks stop. Ends only when the host stops, resets or quits it.
#include "runtime.h"

#define SPINS_PER_TICK (1u << 24)

static void spin(volatile unsigned long *counter) {
  for (unsigned i = 0; i < SPINS_PER_TICK; i++) (*counter)++;
}

void ap_main(unsigned cpu_index) {
  (void)cpu_index;
  volatile unsigned long counter = 0;
  for (;;) spin(&counter);
}

int main(unsigned cpu_count) {
  unsigned online = start_application_processors();
  print("busy: ");
  print_dec(online);
  print(" of ");
  print_dec(cpu_count);
  print(" vCPUs online\n");
  volatile unsigned long counter = 0;
  for (unsigned long tick = 1;; tick++) {
    spin(&counter);
    print("tick ");
    print_dec(tick);
    print("\n");
  }
}
