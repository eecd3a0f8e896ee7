// virtio-blk from a probe guest: enumerate PCI bus 0, bring the first virtio-blk function
// up, read the host's pattern, write our own (the host checks the file), get-id, bad
// requests (IOERR, UNSUPP), several requests in flight, and hostile descriptor chains —
// after each of which the device must say NEEDS_RESET and serve well-formed requests again.
//
// The host attaches a 1 MiB raw disk whose sector s holds bytes (s * 7 + 1) & 0xff.
#include "runtime.h"
#include "virtio.h"

static struct virtq queue;
static struct virtio_device device;
static uint8_t buffer[8][4096] __attribute__((aligned(4096)));

static int memcmp_prefix(const char *bytes, const char *prefix) {
  for (; *prefix; prefix++, bytes++)
    if (*bytes != *prefix) return 0;
  return 1;
}

static uint8_t sector_byte(uint64_t sector) { return (uint8_t)(sector * 7 + 1); }

static int bring_up(void) {
  if (virtio_negotiate(&device, VIRTIO_F_VERSION_1) != 0) return -1;
  if (virtio_queue_setup(&device, &queue, 0, 16) != 0) return -1;
  virtio_ready(&device);
  return 0;
}

static int all_equal(const uint8_t *bytes, unsigned count, uint8_t value) {
  for (unsigned n = 0; n < count; n++)
    if (bytes[n] != value) return 0;
  return 1;
}

static int read_sector_ok(uint64_t sector) {
  return virtio_blk_request(&queue, VIRTIO_BLK_T_IN, sector, buffer[0], 512) == VIRTIO_BLK_S_OK &&
         all_equal(buffer[0], 512, sector_byte(sector));
}

/// Waits (bounded) for the device to set NEEDS_RESET.
static int needs_reset(void) {
  for (uint64_t spin = 0; spin < 400000000ull; spin++) {
    if (virtio_status(&device) & VIRTIO_STATUS_NEEDS_RESET) return 1;
    cpu_relax();
  }
  return 0;
}

static struct virtio_blk_header hostile_header;
static volatile uint8_t hostile_status;

/// Publishes head `head` after `prepare` wrote the descriptors, expects NEEDS_RESET, then
/// resets, brings the device up again and checks a good read works.
static void hostile(const char *name, uint16_t head, uint16_t extra_index_jump) {
  uint16_t idx = queue.avail.idx;
  queue.avail.ring[idx % queue.size] = head;
  __atomic_thread_fence(__ATOMIC_SEQ_CST);
  *(volatile uint16_t *)&queue.avail.idx = (uint16_t)(idx + 1 + extra_index_jump);
  __atomic_thread_fence(__ATOMIC_SEQ_CST);
  mmio_write16(queue.notify, 0);
  check(needs_reset(), name);
  virtio_reset(&device);
  check(bring_up() == 0 && read_sector_ok(5), "served again after reset");
}

int main(unsigned cpu_count) {
  (void)cpu_count;
  check(pci_find(0x1b36, 0x0008) == 0, "host bridge at 00.0");
  int slot = pci_find(0x1af4, 0x1042);
  check(slot > 0, "virtio-blk found on bus 0");
  if (slot <= 0) return 1;
  check(virtio_open(&device, slot) == 0, "virtio capabilities found");
  check(bring_up() == 0, "features negotiated, queue up");
  check(mmio_read64(device.config) == 2048, "capacity is 2048 sectors");

  check(read_sector_ok(10), "read sector 10 (host pattern)");
  check(virtio_blk_request(&queue, VIRTIO_BLK_T_IN, 100, buffer[0], 4096) == VIRTIO_BLK_S_OK &&
            all_equal(buffer[0] + 512, 512, sector_byte(101)),
        "read 4 KiB across sectors");
  memset(buffer[1], 0xa5, 4096);
  check(virtio_blk_request(&queue, VIRTIO_BLK_T_OUT, 200, buffer[1], 4096) == VIRTIO_BLK_S_OK, "write 8 sectors");
  check(virtio_blk_request(&queue, VIRTIO_BLK_T_FLUSH, 0, 0, 0) == VIRTIO_BLK_S_OK, "flush");
  memset(buffer[0], 0, 4096);
  check(virtio_blk_request(&queue, VIRTIO_BLK_T_IN, 200, buffer[0], 4096) == VIRTIO_BLK_S_OK &&
            all_equal(buffer[0], 4096, 0xa5),
        "read back what was written");
  memset(buffer[2], 0, 32);
  check(virtio_blk_request(&queue, VIRTIO_BLK_T_GET_ID, 0, buffer[2], 20) == VIRTIO_BLK_S_OK &&
            memcmp_prefix((const char *)buffer[2], "skvm-disk-0"),
        "get-id");
  check(virtio_blk_request(&queue, VIRTIO_BLK_T_IN, 2048, buffer[0], 512) == VIRTIO_BLK_S_IOERR,
        "read past the end: IOERR");
  check(virtio_blk_request(&queue, 77, 0, buffer[0], 512) == VIRTIO_BLK_S_UNSUPP, "unknown type: UNSUPP");
  check(read_sector_ok(11), "still serving after bad requests");

  // Five reads in flight at once, one kick.
  static struct virtio_blk_header headers[5];
  static volatile uint8_t statuses[5];
  uint16_t heads[5];
  for (unsigned n = 0; n < 5; n++)
    heads[n] = virtio_blk_prepare(&queue, n, &headers[n], VIRTIO_BLK_T_IN, 300 + n, buffer[n], 512, &statuses[n]);
  uint16_t target = (uint16_t)(queue.avail.idx + 5);
  virtq_submit(&queue, heads, 5);
  int batch = virtq_wait(&queue, target) == 0;
  for (unsigned n = 0; n < 5; n++) batch = batch && statuses[n] == 0 && all_equal(buffer[n], 512, sector_byte(300 + n));
  check(batch, "five requests in one kick");

  // Move BAR 0 (as an OS may when it rebalances resources): the device follows, the old
  // address stops decoding, requests (and their kicks) work at the new place.
  uint64_t old_common = device.common;
  pci_write32(slot, 0x04, pci_read32(slot, 0x04) & ~2u);  // decoding off while the BAR changes
  pci_write32(slot, 0x10, 0xe0200000u);
  pci_write32(slot, 0x14, 0);
  check(virtio_open(&device, slot) == 0 && device.common == 0xe0200000ull, "BAR 0 moved to 0xe0200000");
  check(mmio_read32(old_common) == 0xffffffffu, "the old BAR address no longer decodes");
  queue.notify = device.notify + (queue.notify - (old_common + (device.notify - device.common)));
  check(read_sector_ok(12), "served at the new BAR address");

  // Hostile chains. Each uses descriptors 0..2 of the 16-entry table.
  uint16_t head = virtio_blk_prepare(&queue, 0, &hostile_header, VIRTIO_BLK_T_IN, 0, buffer[0], 512, &hostile_status);
  queue.desc[1].addr = 0x7fff00000000ull;  // far outside guest memory
  hostile("buffer outside guest memory: NEEDS_RESET", head, 0);

  head = virtio_blk_prepare(&queue, 0, &hostile_header, VIRTIO_BLK_T_IN, 0, buffer[0], 512, &hostile_status);
  queue.desc[2].flags |= VIRTQ_DESC_F_NEXT;
  queue.desc[2].next = 0;  // 0 → 1 → 2 → 0 …
  hostile("descriptor loop: NEEDS_RESET", head, 0);

  hostile("head index past the table: NEEDS_RESET", 16, 0);

  head = virtio_blk_prepare(&queue, 0, &hostile_header, VIRTIO_BLK_T_IN, 0, buffer[0], 512, &hostile_status);
  queue.desc[0].flags |= VIRTQ_DESC_F_WRITE;  // writable header, then a readable buffer after it
  queue.desc[1].flags &= (uint16_t)~VIRTQ_DESC_F_WRITE;
  hostile("readable after writable: NEEDS_RESET", head, 0);

  head = virtio_blk_prepare(&queue, 0, &hostile_header, VIRTIO_BLK_T_IN, 0, buffer[0], 512, &hostile_status);
  queue.desc[0] = (struct virtq_desc){(uint64_t)&queue.desc[4], 48, VIRTQ_DESC_F_INDIRECT, 0};
  hostile("indirect table without INDIRECT_DESC: NEEDS_RESET", head, 0);

  head = virtio_blk_prepare(&queue, 0, &hostile_header, VIRTIO_BLK_T_IN, 0, buffer[0], 512, &hostile_status);
  hostile("available index jumps past the ring: NEEDS_RESET", head, 100);

  return failures() ? 1 : 0;
}
