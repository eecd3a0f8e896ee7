// A workload for snapshots: it keeps state everywhere a snapshot must capture — a counter in
// memory, local APIC timer interrupts (periodic, 100 Hz, handled at CPL0), every application
// processor counting on its own, and virtio-blk I/O (a write then a read-back of a sector
// whose contents name the request) — and reports it all on COM1 as
//
//   beat B counter C ticks T io I aps A
//
// where A is how many application processors moved since the last beat. Saved mid-run and
// restored in another process, every figure must carry on from where it was: B, C, T and I
// grow, the next block request is served (queue positions restored), A stays at the number
// of APs. A 4 MiB pattern written at start is read back, 64 pages a beat, for ever, and each
// page read is written again with its next generation: RAM restored lazily (mapped from a file
// or an image) must keep reading what was saved, and a live migration must send again every
// page written after it was first sent. Any inconsistency prints "FAIL …" and ends the run
// with a non-zero debug-exit code.
#include "runtime.h"
#include "virtio.h"

#define TIMER_INITIAL_COUNT 10000000u /* 10 ms at KVM's 1 ns APIC bus period, divide by 1 */
#define SECTORS 64
/* At a fixed address above 16 MiB: a large .bss would reach the legacy hole. */
#define PATTERN ((volatile uint64_t *)0x1000000ull)
#define PATTERN_PAGES 1024u
#define PAGES_PER_BEAT 64u

static struct virtq queue;
static struct virtio_device device;
static uint8_t buffer[4096] __attribute__((aligned(4096)));
static volatile uint64_t counter;
static volatile uint64_t timer_ticks;
static volatile uint64_t ap_counters[RUNTIME_MAX_CPUS];
/* How many times each pattern page has been rewritten. */
static volatile uint64_t generations[PATTERN_PAGES];

void interrupt_hook(void) {
  timer_ticks++;
  mmio_write32(RUNTIME_LOCAL_APIC + 0xb0, 0); /* EOI */
}

void ap_main(unsigned cpu_index) {
  for (;;) {
    ap_counters[cpu_index]++;
    for (volatile unsigned spin = 0; spin < 1000; spin++) {}
  }
}

static void fail(const char *what, uint64_t io) {
  print("FAIL ");
  print(what);
  print(" at io ");
  print_dec(io);
  print("\n");
  probe_exit(3);
}

/// Writes sector io % SECTORS with bytes naming `io`, reads it back, checks it.
static void block_round_trip(uint64_t io) {
  uint64_t sector = io % SECTORS;
  for (unsigned n = 0; n < 512; n += 8) *(uint64_t *)(buffer + n) = io * 0x100000001ull + n;
  if (virtio_blk_request(&queue, VIRTIO_BLK_T_OUT, sector, buffer, 512) != VIRTIO_BLK_S_OK) fail("write", io);
  memset(buffer, 0, 512);
  if (virtio_blk_request(&queue, VIRTIO_BLK_T_IN, sector, buffer, 512) != VIRTIO_BLK_S_OK) fail("read", io);
  for (unsigned n = 0; n < 512; n += 8)
    if (*(uint64_t *)(buffer + n) != io * 0x100000001ull + n) fail("read-back", io);
}

static uint64_t pattern_word(uint64_t index) { return (index + 1) * 0x9e3779b97f4a7c15ull; }

/// Reads back pages [first, first + PAGES_PER_BEAT) of the pattern (8 words a page), then
/// writes them again with their next generation.
static void check_pattern(unsigned first, uint64_t io) {
  for (unsigned page = first; page < first + PAGES_PER_BEAT; page++) {
    uint64_t generation = generations[page];
    for (unsigned word = 0; word < 512; word += 64) {
      uint64_t index = page * 512ull + word;
      if (PATTERN[index] != pattern_word(index) + generation) fail("pattern", io);
    }
    for (unsigned word = 0; word < 512; word += 64) {
      uint64_t index = page * 512ull + word;
      PATTERN[index] = pattern_word(index) + generation + 1;
    }
    generations[page] = generation + 1;
  }
}

int main(unsigned cpu_count) {
  for (uint64_t index = 0; index < PATTERN_PAGES * 512ull; index++) PATTERN[index] = pattern_word(index);
  unsigned online = start_application_processors();
  int slot = pci_find(0x1af4, 0x1042);
  if (slot <= 0 || virtio_open(&device, slot) != 0 || virtio_negotiate(&device, VIRTIO_F_VERSION_1) != 0 ||
      virtio_queue_setup(&device, &queue, 0, 16) != 0) {
    print("FAIL virtio-blk bring-up\n");
    return 2;
  }
  virtio_ready(&device);
  mmio_write32(RUNTIME_LOCAL_APIC + 0x3e0, 0xb);                                   /* divide by 1 */
  mmio_write32(RUNTIME_LOCAL_APIC + 0x320, (1u << 17) | RUNTIME_INTERRUPT_VECTOR); /* periodic */
  mmio_write32(RUNTIME_LOCAL_APIC + 0x380, TIMER_INITIAL_COUNT);
  print("workload: ");
  print_dec(online);
  print(" of ");
  print_dec(cpu_count);
  print(" vCPUs online\n");

  uint64_t seen[RUNTIME_MAX_CPUS] = {0};
  uint64_t last_ticks = 0, last_counter = 0;
  for (uint64_t beat = 1, io = 0;; beat++) {
    for (unsigned n = 0; n < 4; n++) block_round_trip(io++);
    check_pattern((unsigned)(beat % (PATTERN_PAGES / PAGES_PER_BEAT)) * PAGES_PER_BEAT, io);
    for (unsigned spin = 0; spin < (1u << 20); spin++) counter++;
    unsigned moved = 0;
    for (unsigned cpu = 1; cpu < online && cpu < RUNTIME_MAX_CPUS; cpu++) {
      uint64_t now = ap_counters[cpu];
      if (now != seen[cpu]) moved++;
      seen[cpu] = now;
    }
    if (counter <= last_counter) fail("counter", io);
    last_counter = counter;
    print("beat ");
    print_dec(beat);
    print(" counter ");
    print_dec(counter);
    print(" ticks ");
    print_dec(timer_ticks);
    print(" io ");
    print_dec(io);
    print(" aps ");
    print_dec(moved);
    print("\n");
    if (beat % 64 == 0) {
      /* Timer interrupts must keep arriving: at least one every 64 beats. */
      if (timer_ticks == last_ticks) fail("timer", io);
      last_ticks = timer_ticks;
    }
  }
}
