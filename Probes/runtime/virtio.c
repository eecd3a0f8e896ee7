// The probe guests' virtio driver (see virtio.h).
#include "virtio.h"
#include "runtime.h"

#define PCI_ADDRESS 0xcf8
#define PCI_DATA 0xcfc
#define BAR_WINDOW_START 0xe0000000ull  // where BARs go when nobody placed them

static void barrier(void) { __atomic_thread_fence(__ATOMIC_SEQ_CST); }

uint32_t pci_read32(unsigned slot, unsigned offset) {
  outl(PCI_ADDRESS, 0x80000000u | (slot << 11) | (offset & 0xfc));
  return inl(PCI_DATA);
}

void pci_write32(unsigned slot, unsigned offset, uint32_t value) {
  outl(PCI_ADDRESS, 0x80000000u | (slot << 11) | (offset & 0xfc));
  outl(PCI_DATA, value);
}

int pci_find(uint16_t vendor, uint16_t device) {
  for (unsigned slot = 0; slot < 32; slot++) {
    uint32_t id = pci_read32(slot, 0);
    if ((id & 0xffff) == vendor && (id >> 16) == device) return (int)slot;
  }
  return -1;
}

static uint64_t next_bar = BAR_WINDOW_START;

/// BAR `index`'s address, placing it first (as firmware would) if it reads 0.
static uint64_t bar_address(unsigned slot, unsigned index) {
  unsigned offset = 0x10 + 4 * index;
  uint32_t low = pci_read32(slot, offset);
  if (low & 1) return 0;  // an I/O BAR: not used here
  int wide = ((low >> 1) & 3) == 2;
  uint64_t address = (low & ~0xfull) | (wide ? (uint64_t)pci_read32(slot, offset + 4) << 32 : 0);
  if (address) return address;
  pci_write32(slot, offset, 0xffffffff);
  uint64_t size = ~(uint64_t)(pci_read32(slot, offset) & ~0xfu) + 1;
  size &= 0xffffffffull;
  if (size == 0) return 0;
  next_bar = (next_bar + size - 1) & ~(size - 1);
  address = next_bar;
  next_bar += size;
  pci_write32(slot, offset, (uint32_t)address);
  if (wide) pci_write32(slot, offset + 4, (uint32_t)(address >> 32));
  return address;
}

int virtio_open(struct virtio_device *device, int slot) {
  device->slot = slot;
  device->common = device->notify = device->isr = device->config = 0;
  uint64_t bars[6] = {0};
  for (unsigned index = 0; index < 6; index++) {
    bars[index] = bar_address(slot, index);
    uint32_t low = pci_read32(slot, 0x10 + 4 * index);
    if (!(low & 1) && ((low >> 1) & 3) == 2) index++;  // the upper half of a 64-bit BAR
  }
  pci_write32(slot, 0x04, (pci_read32(slot, 0x04) & 0xffff0000u) | 0x6);  // memory + bus master
  unsigned cap = pci_read32(slot, 0x34) & 0xff;
  for (int guard = 0; cap && guard < 48; guard++) {
    uint32_t head = pci_read32(slot, cap);
    if ((head & 0xff) == 0x09) {
      unsigned type = (head >> 24) & 0xff;
      unsigned bar = pci_read32(slot, cap + 4) & 0xff;
      uint64_t where = bar < 6 ? bars[bar] + pci_read32(slot, cap + 8) : 0;
      switch (type) {
      case 1: device->common = where; break;
      case 2:
        device->notify = where;
        device->notify_multiplier = pci_read32(slot, cap + 16);
        break;
      case 3: device->isr = where; break;
      case 4: device->config = where; break;
      }
    }
    cap = (head >> 8) & 0xfc;
  }
  return device->common && device->notify && device->isr ? 0 : -1;
}

uint8_t virtio_status(struct virtio_device *device) { return mmio_read8(device->common + 0x14); }

void virtio_reset(struct virtio_device *device) {
  mmio_write8(device->common + 0x14, 0);
  for (int spin = 0; spin < 1000000 && virtio_status(device) != 0; spin++) cpu_relax();
}

int virtio_negotiate(struct virtio_device *device, uint64_t wanted) {
  virtio_reset(device);
  mmio_write8(device->common + 0x14, VIRTIO_STATUS_ACKNOWLEDGE);
  mmio_write8(device->common + 0x14, VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER);
  uint64_t offered = 0;
  for (uint32_t half = 0; half < 2; half++) {
    mmio_write32(device->common + 0x00, half);
    offered |= (uint64_t)mmio_read32(device->common + 0x04) << (32 * half);
  }
  uint64_t accepted = offered & wanted;
  for (uint32_t half = 0; half < 2; half++) {
    mmio_write32(device->common + 0x08, half);
    mmio_write32(device->common + 0x0c, (uint32_t)(accepted >> (32 * half)));
  }
  mmio_write8(device->common + 0x14, VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER | VIRTIO_STATUS_FEATURES_OK);
  return (virtio_status(device) & VIRTIO_STATUS_FEATURES_OK) ? 0 : -1;
}

int virtio_queue_setup(struct virtio_device *device, struct virtq *queue, unsigned index, unsigned size) {
  mmio_write16(device->common + 0x16, (uint16_t)index);
  unsigned maximum = mmio_read16(device->common + 0x18);
  if (maximum == 0) return -1;
  if (size > maximum) size = maximum;
  if (size > VIRTQ_MAX) size = VIRTQ_MAX;
  memset(queue, 0, sizeof *queue);
  queue->size = (uint16_t)size;
  queue->index = (uint16_t)index;
  mmio_write16(device->common + 0x18, (uint16_t)size);
  mmio_write16(device->common + 0x1a, 0xffff);  // no MSI-X vector: this driver polls
  mmio_write64(device->common + 0x20, (uint64_t)queue->desc);
  mmio_write64(device->common + 0x28, (uint64_t)&queue->avail);
  mmio_write64(device->common + 0x30, (uint64_t)&queue->used);
  uint16_t offset = mmio_read16(device->common + 0x1e);
  queue->notify = device->notify + (uint64_t)offset * device->notify_multiplier;
  mmio_write16(device->common + 0x1c, 1);
  return 0;
}

void virtio_ready(struct virtio_device *device) {
  mmio_write8(device->common + 0x14, virtio_status(device) | VIRTIO_STATUS_DRIVER_OK);
}

void virtq_submit(struct virtq *queue, const uint16_t *heads, unsigned count) {
  uint16_t idx = queue->avail.idx;
  for (unsigned n = 0; n < count; n++) queue->avail.ring[(uint16_t)(idx + n) % queue->size] = heads[n];
  barrier();
  *(volatile uint16_t *)&queue->avail.idx = (uint16_t)(idx + count);
  barrier();
  mmio_write16(queue->notify, queue->index);
}

int virtq_wait(struct virtq *queue, uint16_t target) {
  for (uint64_t spin = 0; spin < 400000000ull; spin++) {
    if ((int16_t)(*(volatile uint16_t *)&queue->used.idx - target) >= 0) {
      barrier();
      queue->last_used = target;
      return 0;
    }
    cpu_relax();
  }
  return -1;
}

uint16_t virtio_blk_prepare(struct virtq *queue, unsigned n, struct virtio_blk_header *header, uint32_t type,
                            uint64_t sector, void *data, uint32_t length, volatile uint8_t *status) {
  uint16_t head = (uint16_t)(3 * n);
  header->type = type;
  header->reserved = 0;
  header->sector = sector;
  *status = 0xff;
  int reads = type == VIRTIO_BLK_T_IN || type == VIRTIO_BLK_T_GET_ID;
  queue->desc[head] = (struct virtq_desc){(uint64_t)header, sizeof *header, VIRTQ_DESC_F_NEXT, (uint16_t)(head + 1)};
  if (length) {
    queue->desc[head + 1] = (struct virtq_desc){(uint64_t)data, length,
                                                (uint16_t)(VIRTQ_DESC_F_NEXT | (reads ? VIRTQ_DESC_F_WRITE : 0)),
                                                (uint16_t)(head + 2)};
    queue->desc[head + 2] = (struct virtq_desc){(uint64_t)status, 1, VIRTQ_DESC_F_WRITE, 0};
  } else {
    queue->desc[head].next = (uint16_t)(head + 2);
    queue->desc[head + 2] = (struct virtq_desc){(uint64_t)status, 1, VIRTQ_DESC_F_WRITE, 0};
  }
  return head;
}

static struct virtio_blk_header request_header;
static volatile uint8_t request_status;

uint8_t virtio_blk_request(struct virtq *queue, uint32_t type, uint64_t sector, void *data, uint32_t length) {
  uint16_t head = virtio_blk_prepare(queue, 0, &request_header, type, sector, data, length, &request_status);
  uint16_t target = (uint16_t)(queue->avail.idx + 1);
  virtq_submit(queue, &head, 1);
  if (virtq_wait(queue, target) != 0) return 0xff;
  return request_status;
}
