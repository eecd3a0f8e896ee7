// Accesses nobody claims behave like a floating bus: reads return all ones,
// writes vanish, and the guest carries on.
#include "runtime.h"

#define FREE_PORT 0x760
#define FREE_MMIO 0xd8000000ull

int main(unsigned cpu_count) {
  (void)cpu_count;
  check(inb(FREE_PORT) == 0xff, "unclaimed port read width 1");
  check(inw(FREE_PORT) == 0xffff, "unclaimed port read width 2");
  check(inl(FREE_PORT) == 0xffffffffu, "unclaimed port read width 4");
  outl(FREE_PORT, 0x12345678);
  check(mmio_read8(FREE_MMIO) == 0xff, "unclaimed mmio read width 1");
  check(mmio_read16(FREE_MMIO + 2) == 0xffff, "unclaimed mmio read width 2");
  check(mmio_read32(FREE_MMIO + 4) == 0xffffffffu, "unclaimed mmio read width 4");
  check(mmio_read64(FREE_MMIO + 8) == ~0ull, "unclaimed mmio read width 8");
  mmio_write64(FREE_MMIO + 16, 0x1122334455667788ull);
  check(mmio_read32(FREE_MMIO + 16) == 0xffffffffu, "unclaimed mmio write is dropped");
  return failures() ? 1 : 0;
}
