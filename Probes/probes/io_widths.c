// Port I/O at widths 1/2/4 and MMIO at widths 1/2/4/8 round-trip through the
// host's recording device (ports 0x700–0x73f, MMIO 0xd0000000), plus string
// port I/O (rep outsb / rep insw), which KVM delivers as one exit with count > 1.
#include "runtime.h"

#define PORT 0x700
#define MMIO 0xd0000000ull

int main(unsigned cpu_count) {
  (void)cpu_count;
  outb(PORT + 0, 0xa5);
  check(inb(PORT + 0) == 0xa5, "port width 1");
  outw(PORT + 8, 0xbeef);
  check(inw(PORT + 8) == 0xbeef, "port width 2");
  outl(PORT + 16, 0xdeadbeef);
  check(inl(PORT + 16) == 0xdeadbeef, "port width 4");

  mmio_write8(MMIO + 0, 0x5a);
  check(mmio_read8(MMIO + 0) == 0x5a, "mmio width 1");
  mmio_write16(MMIO + 8, 0xcafe);
  check(mmio_read16(MMIO + 8) == 0xcafe, "mmio width 2");
  mmio_write32(MMIO + 16, 0x12345678);
  check(mmio_read32(MMIO + 16) == 0x12345678, "mmio width 4");
  mmio_write64(MMIO + 24, 0x0123456789abcdefull);
  check(mmio_read64(MMIO + 24) == 0x0123456789abcdefull, "mmio width 8");

  static const char text[4] = {'s', 'k', 'v', 'm'};
  const char *source = text;
  unsigned long count = 4;
  uint16_t port = PORT + 32;
  __asm__ volatile("rep outsb" : "+S"(source), "+c"(count) : "d"(port) : "memory");
  check(count == 0, "rep outsb completes");
  outw(PORT + 40, 0x7777);
  uint16_t words[3] = {0, 0, 0};
  uint16_t *target = words;
  count = 3;
  port = PORT + 40;
  __asm__ volatile("rep insw" : "+D"(target), "+c"(count) : "d"(port) : "memory");
  check(words[0] == 0x7777 && words[1] == 0x7777 && words[2] == 0x7777, "rep insw reads each word");
  return failures() ? 1 : 0;
}
