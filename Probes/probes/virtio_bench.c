// The virtio-blk benchmark guest (bench/run-blk): the same bytes run under skvm and under
// QEMU q35 with virtio-blk-pci. At CPL3 it runs natively on PVM hosts, so the device model
// and the VMM's I/O path are measured, not KVM's emulator. Each phase prints
// "BEGIN name" and "END name requests bytes"; the host timestamps the lines.
#include "runtime.h"
#include "virtio.h"

#define MIB (1u << 20)
#define SEQUENTIAL_DEPTH 4
#define RANDOM_DEPTH 32
#define RANDOM_REQUESTS 20000
// At least this many MiB per sequential phase (the disk is read round and round): a phase
// of a few tens of milliseconds measures the host's first faults on the guest's buffers
// more than the I/O path.
#define SEQUENTIAL_MINIMUM 1024
#define SYNCHRONOUS_REQUESTS 4000

static struct virtq queue;
static struct virtio_device device;
// Data buffers at fixed addresses above 16 MiB: a large .bss would reach the legacy hole at
// 0xA0000–0xFFFFF, which is not RAM on QEMU.
#define big ((uint8_t(*)[MIB])0x1000000ull)
#define small ((uint8_t(*)[4096])0x1800000ull)
static struct virtio_blk_header headers[RANDOM_DEPTH];
static volatile uint8_t statuses[RANDOM_DEPTH];

static void mark(const char *what, const char *name, uint64_t requests, uint64_t bytes) {
  print(what);
  print(" ");
  print(name);
  if (bytes) {
    print(" ");
    print_dec(requests);
    print(" ");
    print_dec(bytes);
  }
  print("\n");
}

/// Runs `total` requests of `length` bytes, `depth` at a time (one kick per batch);
/// sector numbers from `next_sector`. Returns 0 when every status was OK.
static int phase(const char *name, uint32_t type, uint64_t total, unsigned depth, uint32_t length,
                 uint64_t (*next_sector)(uint64_t)) {
  mark("BEGIN", name, 0, 0);
  int failed = 0;
  for (uint64_t done = 0; done < total;) {
    unsigned batch = total - done < depth ? (unsigned)(total - done) : depth;
    uint16_t heads[RANDOM_DEPTH];
    for (unsigned n = 0; n < batch; n++) {
      void *data = length == MIB ? (void *)big[n] : (void *)small[n];
      heads[n] = virtio_blk_prepare(&queue, n, &headers[n], type, next_sector(done + n), data, length, &statuses[n]);
    }
    uint16_t target = (uint16_t)(queue.avail.idx + batch);
    virtq_submit(&queue, heads, batch);
    if (virtq_wait(&queue, target) != 0) return -1;
    for (unsigned n = 0; n < batch; n++) failed |= statuses[n];
    done += batch;
  }
  mark("END", name, total, total * length);
  return failed;
}

/// One request at a time, each 1 MiB in SEGMENTS scattered buffers (as a guest kernel's
/// request over separate pages is): the VMM's cost per segment shows.
#define SEGMENTS 64
static int scattered_phase(const char *name, uint32_t type, uint64_t total, uint64_t (*next_sector)(uint64_t)) {
  mark("BEGIN", name, 0, 0);
  uint32_t segment = MIB / SEGMENTS;
  uint16_t flags = (uint16_t)(VIRTQ_DESC_F_NEXT | (type == VIRTIO_BLK_T_IN ? VIRTQ_DESC_F_WRITE : 0));
  for (uint64_t done = 0; done < total; done++) {
    headers[0].type = type;
    headers[0].reserved = 0;
    headers[0].sector = next_sector(done);
    statuses[0] = 0xff;
    queue.desc[0] = (struct virtq_desc){(uint64_t)&headers[0], sizeof headers[0], VIRTQ_DESC_F_NEXT, 1};
    // The segments in reverse order of address: adjacent in the request, never in memory.
    for (unsigned n = 0; n < SEGMENTS; n++)
      queue.desc[1 + n] = (struct virtq_desc){(uint64_t)big[0] + (uint64_t)(SEGMENTS - 1 - n) * segment, segment, flags,
                                              (uint16_t)(2 + n)};
    queue.desc[1 + SEGMENTS] = (struct virtq_desc){(uint64_t)&statuses[0], 1, VIRTQ_DESC_F_WRITE, 0};
    uint16_t head = 0;
    uint16_t target = (uint16_t)(queue.avail.idx + 1);
    virtq_submit(&queue, &head, 1);
    if (virtq_wait(&queue, target) != 0 || statuses[0] != 0) return -1;
  }
  mark("END", name, total, total * MIB);
  return 0;
}

static uint64_t capacity;
static uint64_t sequential(uint64_t request) { return (request * 2048) % capacity; }
static uint64_t random_state = 0x9e3779b97f4a7c15ull;
static uint64_t random_sector(uint64_t request) {
  (void)request;
  random_state ^= random_state << 13;
  random_state ^= random_state >> 7;
  random_state ^= random_state << 17;
  return (random_state % (capacity / 8)) * 8;
}

int main(unsigned cpu_count) {
  (void)cpu_count;
  int slot = pci_find(0x1af4, 0x1042);
  if (slot < 0 || virtio_open(&device, slot) != 0) {
    print("no virtio-blk device\n");
    return 1;
  }
  if (virtio_negotiate(&device, VIRTIO_F_VERSION_1) != 0 || virtio_queue_setup(&device, &queue, 0, 128) != 0) {
    print("virtio-blk did not come up\n");
    return 1;
  }
  virtio_ready(&device);
  capacity = mmio_read64(device.config);
  uint64_t mebibytes = capacity / 2048;
  uint64_t sequential_total = mebibytes < SEQUENTIAL_MINIMUM ? SEQUENTIAL_MINIMUM : mebibytes;
  int failed = 0;
  failed |= phase("seq-read-1M", VIRTIO_BLK_T_IN, sequential_total, SEQUENTIAL_DEPTH, MIB, sequential);
  failed |= phase("seq-write-1M", VIRTIO_BLK_T_OUT, sequential_total, SEQUENTIAL_DEPTH, MIB, sequential);
  failed |= phase("rand-read-4K", VIRTIO_BLK_T_IN, RANDOM_REQUESTS, RANDOM_DEPTH, 4096, random_sector);
  // One request at a time (a synchronous reader): latency, not throughput.
  failed |= phase("seq-read-1M-qd1", VIRTIO_BLK_T_IN, sequential_total / 4, 1, MIB, sequential);
  failed |= phase("rand-read-4K-qd1", VIRTIO_BLK_T_IN, SYNCHRONOUS_REQUESTS, 1, 4096, random_sector);
  failed |= scattered_phase("seq-read-1M-sg64", VIRTIO_BLK_T_IN, sequential_total / 4, sequential);
  failed |= scattered_phase("seq-write-1M-sg64", VIRTIO_BLK_T_OUT, sequential_total / 4, sequential);
  print(failed ? "bench: a request failed\n" : "bench: done\n");
  return failed ? 1 : 0;
}
