// The guest for bench/run-snapshot: touches 64 MiB of RAM (so a snapshot has real content,
// the rest of RAM stays untouched), prints "ready", then prints a dot every few microseconds
// forever. A restored machine's first byte shows the moment it runs again.
#include "runtime.h"

#define TOUCHED (64ull << 20)
#define START (16ull << 20)

int main(unsigned cpu_count) {
  (void)cpu_count;
  for (uint64_t address = START; address < START + TOUCHED; address += 4096)
    *(volatile uint64_t *)address = address * 0x9e3779b97f4a7c15ull;
  print("ready\n");
  for (;;) {
    for (volatile unsigned spin = 0; spin < 2000; spin++) {}
    print(".");
  }
}
