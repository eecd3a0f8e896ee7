// The guest for bench/run-migrate's "dirtying" rows: like snapshot_bench (64 MiB of RAM
// written, "ready", then a dot every few microseconds forever), but it also keeps rewriting
// that 64 MiB, one page every 2^18 TSC ticks (34 MiB/s at a 2.3 GHz TSC), so a live migration
// has a steady stream of pages dirtied by the guest to send again.
#include "runtime.h"

#define TOUCHED (64ull << 20)
#define START (16ull << 20)
#define TICKS_PER_PAGE (1ull << 18)

static inline uint64_t ticks(void) {
  uint32_t low, high;
  __asm__ volatile("rdtsc" : "=a"(low), "=d"(high));
  return ((uint64_t)high << 32) | low;
}

int main(unsigned cpu_count) {
  (void)cpu_count;
  for (uint64_t address = START; address < START + TOUCHED; address += 4096)
    *(volatile uint64_t *)address = address * 0x9e3779b97f4a7c15ull;
  print("ready\n");
  uint64_t next = ticks(), page = 0, generation = 1;
  for (;;) {
    for (volatile unsigned spin = 0; spin < 2000; spin++) {}
    print(".");
    uint64_t now = ticks();
    if ((int64_t)(now - next) > (1ll << 32)) next = now;  // a long pause (or a TSC jump): no catching up
    for (; now >= next; next += TICKS_PER_PAGE) {
      *(volatile uint64_t *)(START + page * 4096) = generation;
      if (++page == TOUCHED / 4096) {
        page = 0;
        generation++;
      }
    }
  }
}
