// The virtio-net benchmark guest: brings the first virtio-net function up and sends frames
// as fast as the device takes them — minimum-size (60 bytes) and full-size (1514) — in
// bursts of 128 per kick, four bursts in flight. Each phase prints "BEGIN name" and
// "END name frames bytes"; the host timestamps the lines (bench/run-net).
#include "runtime.h"
#include "virtio.h"

#define QUEUE 256
#define BURST 128
#define HEADER 12

static struct virtq receive_queue, transmit_queue;
static struct virtio_device device;
static uint8_t frames[QUEUE][2048] __attribute__((aligned(4096)));

static void line(const char *what, const char *name, uint64_t count, uint64_t bytes) {
  print(what);
  print(" ");
  print(name);
  if (count) {
    print(" ");
    print_dec(count);
    print(" ");
    print_dec(bytes);
  }
  print("\n");
}

/// Sends `total` frames of `length` bytes, BURST per kick, keeping the ring full.
static int send(const char *name, unsigned length, uint64_t total) {
  for (unsigned slot = 0; slot < QUEUE; slot++) {
    memset(frames[slot], 0, HEADER);
    uint8_t *ethernet = frames[slot] + HEADER;
    memset(ethernet, 0xff, 6);
    ethernet[6] = 0x02;
    ethernet[12] = 0x88;
    ethernet[13] = 0xb5;
    transmit_queue.desc[slot] = (struct virtq_desc){(uint64_t)frames[slot], HEADER + length, 0, 0};
  }
  line("BEGIN", name, 0, 0);
  uint64_t submitted = 0;
  uint16_t heads[BURST];
  unsigned next_slot = 0;
  while (submitted < total) {
    // Room for a burst: at most QUEUE frames not yet used by the device.
    while ((uint16_t)(transmit_queue.avail.idx - *(volatile uint16_t *)&transmit_queue.used.idx) > QUEUE - BURST)
      cpu_relax();
    for (unsigned n = 0; n < BURST; n++) heads[n] = (uint16_t)((next_slot + n) % QUEUE);
    next_slot = (next_slot + BURST) % QUEUE;
    virtq_submit(&transmit_queue, heads, BURST);
    submitted += BURST;
  }
  if (virtq_wait(&transmit_queue, transmit_queue.avail.idx) != 0) return -1;
  line("END", name, submitted, submitted * length);
  return 0;
}

int main(unsigned cpu_count) {
  (void)cpu_count;
  int slot = pci_find(0x1af4, 0x1041);
  if (slot <= 0 || virtio_open(&device, slot) != 0 || virtio_negotiate(&device, VIRTIO_F_VERSION_1) != 0 ||
      virtio_queue_setup(&device, &receive_queue, 0, QUEUE) != 0 ||
      virtio_queue_setup(&device, &transmit_queue, 1, QUEUE) != 0) {
    print("bench: no virtio-net\n");
    return 1;
  }
  virtio_ready(&device);
  int failed = send("tx-60", 60, 200000) || send("tx-1514", 1514, 50000);
  print("bench: done\n");
  return failed;
}
