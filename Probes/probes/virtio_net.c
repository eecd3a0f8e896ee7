// virtio-net from a probe guest, against a host peer on a tap (Tests/Network/probe_peer.py):
// bring the NIC up with mergeable receive buffers and the control queue, send frames the
// peer checks byte for byte, take a burst of 1,000 frames from it with none lost, a frame
// spread over several buffers, the MAC filter (promiscuous off), and a hostile transmit
// chain, after which the device must say NEEDS_RESET and work again once reset.
//
// Each phase is announced on COM1 ("PHASE name") for the peer, which answers on the tap.
// Frames use the local experimental ethertype 0x88b5; payload byte i of frame n is
// (i * 7 + n) & 0xff after a 4-byte frame number.
#include "runtime.h"
#include "virtio.h"

#define QUEUE 256
#define BUFFER 2048
#define HEADER 12
#define ETHERTYPE_HI 0x88
#define ETHERTYPE_LO 0xb5

static struct virtq receive_queue, transmit_queue, control_queue;
static struct virtio_device device;
static uint8_t receive_buffers[QUEUE][BUFFER] __attribute__((aligned(4096)));
static uint8_t transmit_buffers[QUEUE][BUFFER] __attribute__((aligned(4096)));
static uint8_t control_command[64];
static volatile uint8_t control_ack;
static uint8_t frame[16384];
static uint8_t mac[6];

#define F_MAC (1ull << 5)
#define F_MRG_RXBUF (1ull << 15)
#define F_STATUS (1ull << 16)
#define F_CTRL_VQ (1ull << 17)
#define F_CTRL_RX (1ull << 18)

static void post_receive_buffers(void) {
  for (unsigned n = 0; n < QUEUE; n++) {
    receive_queue.desc[n] = (struct virtq_desc){(uint64_t)receive_buffers[n], BUFFER, VIRTQ_DESC_F_WRITE, 0};
    receive_queue.avail.ring[n] = (uint16_t)n;
  }
  __atomic_thread_fence(__ATOMIC_SEQ_CST);
  *(volatile uint16_t *)&receive_queue.avail.idx = QUEUE;
  __atomic_thread_fence(__ATOMIC_SEQ_CST);
  mmio_write16(receive_queue.notify, 0);
}

static int bring_up(void) {
  if (virtio_negotiate(&device, VIRTIO_F_VERSION_1 | F_MAC | F_MRG_RXBUF | F_STATUS | F_CTRL_VQ | F_CTRL_RX) != 0)
    return -1;
  if (virtio_queue_setup(&device, &receive_queue, 0, QUEUE) != 0) return -1;
  if (virtio_queue_setup(&device, &transmit_queue, 1, QUEUE) != 0) return -1;
  if (virtio_queue_setup(&device, &control_queue, 2, 16) != 0) return -1;
  virtio_ready(&device);
  post_receive_buffers();
  return 0;
}

static uint8_t pattern(unsigned i, unsigned number) { return (uint8_t)(i * 7 + number); }

/// Builds frame `number` of `length` bytes to `destination` in transmit buffer `slot`.
static unsigned build(unsigned slot, const uint8_t *destination, unsigned number, unsigned length) {
  uint8_t *buffer = transmit_buffers[slot];
  memset(buffer, 0, HEADER);
  uint8_t *ethernet = buffer + HEADER;
  memcpy(ethernet, destination, 6);
  memcpy(ethernet + 6, mac, 6);
  ethernet[12] = ETHERTYPE_HI;
  ethernet[13] = ETHERTYPE_LO;
  ethernet[14] = (uint8_t)number;
  ethernet[15] = (uint8_t)(number >> 8);
  ethernet[16] = (uint8_t)(number >> 16);
  ethernet[17] = (uint8_t)(number >> 24);
  for (unsigned i = 18; i < length; i++) ethernet[i] = pattern(i, number);
  return HEADER + length;
}

/// Sends `count` frames (numbers first..first+count-1, lengths varying) in one kick; 0 when all were used.
static int send_burst(const uint8_t *destination, unsigned first, unsigned count) {
  uint16_t heads[QUEUE];
  for (unsigned n = 0; n < count; n++) {
    unsigned length = 60 + ((first + n) * 97) % 1455;
    unsigned slot = n % QUEUE;
    transmit_queue.desc[slot] = (struct virtq_desc){(uint64_t)transmit_buffers[slot],
                                                    build(slot, destination, first + n, length), 0, 0};
    heads[n] = (uint16_t)slot;
  }
  uint16_t target = (uint16_t)(transmit_queue.avail.idx + count);
  virtq_submit(&transmit_queue, heads, count);
  return virtq_wait(&transmit_queue, target);
}

/// Takes the next received frame (over as many buffers as num_buffers says) into `frame`,
/// gives the buffers back; its length, or -1 if none came in time.
static int receive(uint64_t spins) {
  for (uint64_t spin = 0; spin < spins; spin++) {
    if (*(volatile uint16_t *)&receive_queue.used.idx != receive_queue.last_used) {
      __atomic_thread_fence(__ATOMIC_SEQ_CST);
      unsigned length = 0, buffers = 1;
      for (unsigned part = 0; part < buffers; part++) {
        while (*(volatile uint16_t *)&receive_queue.used.idx == receive_queue.last_used) cpu_relax();
        __atomic_thread_fence(__ATOMIC_SEQ_CST);
        unsigned slot = receive_queue.last_used % receive_queue.size;
        unsigned id = receive_queue.used.ring[slot].id % QUEUE;
        unsigned used = receive_queue.used.ring[slot].len;
        const uint8_t *bytes = receive_buffers[id];
        if (part == 0) {
          buffers = bytes[10] | (unsigned)bytes[11] << 8;
          if (buffers == 0 || used < HEADER) return -2;
          bytes += HEADER;
          used -= HEADER;
        }
        if (length + used <= sizeof frame) memcpy(frame + length, bytes, used);
        length += used;
        receive_queue.last_used++;
        // The buffer goes straight back to the device.
        uint16_t idx = receive_queue.avail.idx;
        receive_queue.avail.ring[idx % receive_queue.size] = (uint16_t)id;
        __atomic_thread_fence(__ATOMIC_SEQ_CST);
        *(volatile uint16_t *)&receive_queue.avail.idx = (uint16_t)(idx + 1);
      }
      __atomic_thread_fence(__ATOMIC_SEQ_CST);
      mmio_write16(receive_queue.notify, 0);
      return (int)length;
    }
    cpu_relax();
  }
  return -1;
}

static unsigned frame_number(void) {
  return frame[14] | (unsigned)frame[15] << 8 | (unsigned)frame[16] << 16 | (unsigned)frame[17] << 24;
}

/// Whether `frame` (of `length`) is frame `number` from the peer to us, byte for byte.
static int frame_ok(int length, unsigned number, unsigned expected_length) {
  if (length != (int)expected_length || frame[12] != ETHERTYPE_HI || frame[13] != ETHERTYPE_LO) return 0;
  for (unsigned i = 0; i < 6; i++)
    if (frame[i] != mac[i]) return 0;
  if (frame_number() != number) return 0;
  for (unsigned i = 18; i < expected_length; i++)
    if (frame[i] != pattern(i, number)) return 0;
  return 1;
}

/// Waits for the next frame of ours (skipping the host's IPv6 chatter); its length or -1.
static int receive_ours(void) {
  for (unsigned tries = 0; tries < 64; tries++) {
    int length = receive(4000000000ull);
    if (length < 0) return length;
    if (length >= 18 && frame[12] == ETHERTYPE_HI && frame[13] == ETHERTYPE_LO) return length;
  }
  return -1;
}

static int control(uint8_t class, uint8_t command, const uint8_t *data, unsigned length) {
  control_command[0] = class;
  control_command[1] = command;
  memcpy(control_command + 2, data, length);
  control_ack = 0xff;
  control_queue.desc[0] = (struct virtq_desc){(uint64_t)control_command, 2 + length, VIRTQ_DESC_F_NEXT, 1};
  control_queue.desc[1] = (struct virtq_desc){(uint64_t)&control_ack, 1, VIRTQ_DESC_F_WRITE, 0};
  uint16_t head = 0;
  uint16_t target = (uint16_t)(control_queue.avail.idx + 1);
  virtq_submit(&control_queue, &head, 1);
  if (virtq_wait(&control_queue, target) != 0) return -1;
  return control_ack;
}

static int needs_reset(void) {
  for (uint64_t spin = 0; spin < 400000000ull; spin++) {
    if (virtio_status(&device) & VIRTIO_STATUS_NEEDS_RESET) return 1;
    cpu_relax();
  }
  return 0;
}

static const uint8_t broadcast[6] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff};

int main(unsigned cpu_count) {
  (void)cpu_count;
  int slot = pci_find(0x1af4, 0x1041);
  check(slot > 0, "virtio-net found on bus 0");
  if (slot <= 0) return 1;
  check(virtio_open(&device, slot) == 0, "virtio capabilities found");
  check(bring_up() == 0, "features negotiated, three queues up");
  for (unsigned i = 0; i < 6; i++) mac[i] = mmio_read8(device.config + i);
  check(mac[0] == 0x52 && mac[1] == 0x54 && mac[2] == 0x00, "MAC address in 52:54:00");
  check((mmio_read16(device.config + 6) & 1) == 1, "link up");
  print("PHASE transmit\n");
  // 64 frames to the peer (it checks them), in two bursts of 32.
  check(send_burst(broadcast, 0, 32) == 0 && send_burst(broadcast, 32, 32) == 0, "64 frames sent");

  print("PHASE burst\n");
  unsigned good = 0;
  for (unsigned number = 0; number < 1000; number++) {
    int length = receive_ours();
    if (length < 0) break;
    if (frame_ok(length, number, 60 + (number * 97) % 1455)) good++;
  }
  print("received ");
  print_dec(good);
  print("\n");
  check(good == 1000, "1000 frames in a burst, byte-exact, in order, none lost");

  print("PHASE mergeable\n");
  int length = receive_ours();
  check(frame_ok(length, 5000, 5000), "a 5000-byte frame over three mergeable buffers");

  check(control(0, 0, (const uint8_t[]){0}, 1) == 0, "promiscuous off (control queue)");
  print("PHASE filter\n");
  length = receive_ours();
  check(length > 0 && frame_number() == 7777, "the filter kept another host's frame out, ours came");

  print("PHASE hostile\n");
  transmit_queue.desc[0] = (struct virtq_desc){0x7fff0000000ull, 64, 0, 0};
  uint16_t head = 0;
  virtq_submit(&transmit_queue, &head, 1);
  check(needs_reset(), "a transmit buffer outside guest memory: NEEDS_RESET");
  virtio_reset(&device);
  check(bring_up() == 0, "up again after reset");
  check(send_burst(broadcast, 9000, 1) == 0, "sends again after reset");
  print("PHASE done\n");
  return failures() ? 1 : 0;
}
