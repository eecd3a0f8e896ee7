// A minimal virtio 1.x PCI driver for probe guests: PCI configuration through 0xCF8/0xCFC,
// BAR placement when no firmware did it (QEMU with a bare -bios), the vendor capabilities,
// feature negotiation, split virtqueues, and virtio-blk requests. Polls; no interrupts.
#ifndef PROBE_VIRTIO_H
#define PROBE_VIRTIO_H

#include <stdint.h>

uint32_t pci_read32(unsigned slot, unsigned offset);
void pci_write32(unsigned slot, unsigned offset, uint32_t value);
/// The first slot on bus 0 with this vendor and device ID, or -1.
int pci_find(uint16_t vendor, uint16_t device);

struct virtq_desc {
  uint64_t addr;
  uint32_t len;
  uint16_t flags;
  uint16_t next;
};

#define VIRTQ_DESC_F_NEXT 1
#define VIRTQ_DESC_F_WRITE 2
#define VIRTQ_DESC_F_INDIRECT 4
#define VIRTQ_MAX 256

/// One split virtqueue, its rings inside the struct (page aligned).
struct virtq {
  struct virtq_desc desc[VIRTQ_MAX] __attribute__((aligned(4096)));
  struct {
    uint16_t flags, idx, ring[VIRTQ_MAX], used_event;
  } avail __attribute__((aligned(4096)));
  struct {
    uint16_t flags, idx;
    struct {
      uint32_t id, len;
    } ring[VIRTQ_MAX];
    uint16_t avail_event;
  } used __attribute__((aligned(4096)));
  uint16_t size;
  uint16_t last_used;
  uint64_t notify;  // the queue's notify register
  uint16_t index;
};

struct virtio_device {
  int slot;
  uint64_t common, notify, isr, config;
  uint32_t notify_multiplier;
};

#define VIRTIO_STATUS_ACKNOWLEDGE 1
#define VIRTIO_STATUS_DRIVER 2
#define VIRTIO_STATUS_DRIVER_OK 4
#define VIRTIO_STATUS_FEATURES_OK 8
#define VIRTIO_STATUS_NEEDS_RESET 64
#define VIRTIO_F_VERSION_1 (1ull << 32)

/// Finds the structures behind the capabilities of the function in `slot`, placing its
/// BARs first if they read as 0 and enabling memory decoding and bus mastering; 0 on success.
int virtio_open(struct virtio_device *device, int slot);
/// Resets the device (status 0, waits until it reads back 0).
void virtio_reset(struct virtio_device *device);
/// ACKNOWLEDGE, DRIVER, features (the device's ∩ `wanted`), FEATURES_OK; 0 if the device accepted.
int virtio_negotiate(struct virtio_device *device, uint64_t wanted);
/// Sets up queue `index` with `size` entries (at most the device's maximum) in `queue`; 0 on success.
int virtio_queue_setup(struct virtio_device *device, struct virtq *queue, unsigned index, unsigned size);
/// Sets DRIVER_OK.
void virtio_ready(struct virtio_device *device);
uint8_t virtio_status(struct virtio_device *device);

/// Publishes `count` heads from `heads` on the available ring and kicks once (a 16-bit write).
void virtq_submit(struct virtq *queue, const uint16_t *heads, unsigned count);
/// Waits (bounded) until the used index reaches `target`; 0 on success, -1 on timeout.
int virtq_wait(struct virtq *queue, uint16_t target);

/// virtio-blk request types and status values.
#define VIRTIO_BLK_T_IN 0
#define VIRTIO_BLK_T_OUT 1
#define VIRTIO_BLK_T_FLUSH 4
#define VIRTIO_BLK_T_GET_ID 8
#define VIRTIO_BLK_S_OK 0
#define VIRTIO_BLK_S_IOERR 1
#define VIRTIO_BLK_S_UNSUPP 2

struct virtio_blk_header {
  uint32_t type, reserved;
  uint64_t sector;
};

/// Builds a three-descriptor block request in slots 3*n .. 3*n+2 (header, data, status) and
/// returns its head; `data` may be 0-length (flush).
uint16_t virtio_blk_prepare(struct virtq *queue, unsigned n, struct virtio_blk_header *header, uint32_t type,
                            uint64_t sector, void *data, uint32_t length, volatile uint8_t *status);
/// One synchronous request; returns the status byte, or 0xff if it never completed.
uint8_t virtio_blk_request(struct virtq *queue, uint32_t type, uint64_t sector, void *data, uint32_t length);

#endif
