// fw_cfg from inside a guest, as SeaBIOS reads it: the signature and feature bits through the
// ports, the file directory, `etc/e820` by DMA (the RAM map the VMM gave), and DMA
// descriptors a careless or hostile guest might write — each must come back with the
// error bit, and the device must answer normally afterwards.
#include "runtime.h"

#define SELECTOR 0x510
#define DATA 0x511
#define DMA_HIGH 0x514
#define DMA_LOW 0x518

struct dma_access {
  uint32_t control;
  uint32_t length;
  uint64_t address;
} __attribute__((packed, aligned(16)));

static uint32_t be32(uint32_t v) { return __builtin_bswap32(v); }
static uint64_t be64(uint64_t v) { return __builtin_bswap64(v); }

static void read_port(uint16_t key, uint8_t *buffer, unsigned count) {
  outw(SELECTOR, key);
  for (unsigned i = 0; i < count; i++) buffer[i] = inb(DATA);
}

static volatile struct dma_access access;
static uint8_t buffer[4096];

// Runs a DMA transfer as SeaBIOS does (each half of the descriptor's address byte-swapped);
// returns the control word the device wrote back.
static uint32_t dma(uint32_t control, uint32_t length, uint64_t address) {
  access.control = be32(control);
  access.length = be32(length);
  access.address = be64(address);
  uint64_t descriptor = (uint64_t)(uintptr_t)&access;
  outl(DMA_HIGH, be32((uint32_t)(descriptor >> 32)));
  outl(DMA_LOW, be32((uint32_t)descriptor));
  return be32(access.control);
}

static int same(const uint8_t *a, const char *b, unsigned n) {
  for (unsigned i = 0; i < n; i++)
    if (a[i] != (uint8_t)b[i]) return 0;
  return 1;
}

int main(unsigned cpu_count) {
  (void)cpu_count;
  uint8_t bytes[64];
  read_port(0x0000, bytes, 4);
  check(same(bytes, "QEMU", 4), "signature QEMU");
  read_port(0x0001, bytes, 4);
  check(bytes[0] == 3, "feature bits: ports and DMA");
  uint32_t high = inl(DMA_HIGH), low = inl(DMA_LOW);
  check(same((uint8_t *)&high, "QEMU", 4) && same((uint8_t *)&low, " CFG", 4), "DMA register reads QEMU CFG");

  // The directory: find etc/e820.
  outw(SELECTOR, 0x0019);
  uint8_t count_bytes[4];
  for (int i = 0; i < 4; i++) count_bytes[i] = inb(DATA);
  uint32_t files = be32(*(uint32_t *)count_bytes);
  uint16_t e820_key = 0;
  uint32_t e820_size = 0;
  for (uint32_t f = 0; f < files && f < 64; f++) {
    for (int i = 0; i < 64; i++) bytes[i] = inb(DATA);
    if (same(bytes + 8, "etc/e820", 9)) {
      e820_size = be32(*(uint32_t *)bytes);
      e820_key = (uint16_t)(bytes[4] << 8 | bytes[5]);
    }
  }
  check(e820_key >= 0x20 && e820_size >= 20 && e820_size % 20 == 0, "directory lists etc/e820");

  // etc/e820 by DMA: the first entry is RAM from 0.
  for (unsigned i = 0; i < sizeof buffer; i++) buffer[i] = 0xEE;
  uint32_t control = dma(0x08 | 0x02 | ((uint32_t)e820_key << 16), e820_size, (uint64_t)(uintptr_t)buffer);
  check(control == 0, "DMA read of etc/e820 completes");
  uint64_t base = *(uint64_t *)buffer, length = *(uint64_t *)(buffer + 8);
  uint32_t type = *(uint32_t *)(buffer + 16);
  check(base == 0 && length >= (1 << 20) && type == 1, "first e820 entry is RAM from 0");
  print("e820 RAM bytes ");
  print_dec(length);
  print("\n");
  check(buffer[e820_size] == 0xEE, "DMA wrote no further than asked");

  // Hostile descriptors: a target outside RAM, a write, a length past RAM's end.
  check(dma(0x08 | 0x02 | ((uint32_t)e820_key << 16), 16, 1ull << 40) & 1, "DMA to outside RAM: error bit");
  check(dma(0x08 | 0x10 | ((uint32_t)e820_key << 16), 4, (uint64_t)(uintptr_t)buffer) & 1, "DMA write: error bit");
  check(dma(0x08 | 0x02, 0xFFFFFFFFu, (uint64_t)(uintptr_t)buffer) & 1, "DMA of 4 GiB: error bit");
  read_port(0x0000, bytes, 4);
  check(same(bytes, "QEMU", 4), "still answers after hostile DMA");
  return failures() ? 1 : 0;
}
