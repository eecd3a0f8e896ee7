#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/vhost.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>
#include "cvhost.h"

int csys_vhost_open(void) {
  int fd = open("/dev/vhost-net", O_RDWR | O_CLOEXEC);
  if (fd < 0) return -1;
  if (ioctl(fd, VHOST_SET_OWNER, NULL) != 0) {
    int saved = errno;
    close(fd);
    errno = saved;
    return -1;
  }
  return fd;
}

int csys_vhost_get_features(int fd, uint64_t *features) { return ioctl(fd, VHOST_GET_FEATURES, features); }

int csys_vhost_set_features(int fd, uint64_t features) { return ioctl(fd, VHOST_SET_FEATURES, &features); }

int csys_vhost_set_memory(int fd, unsigned count, const uint64_t *guest, const uint64_t *size, const uint64_t *host) {
  struct vhost_memory *table = calloc(1, sizeof *table + count * sizeof(struct vhost_memory_region));
  if (table == NULL) return -1;
  table->nregions = count;
  for (unsigned i = 0; i < count; i++) {
    table->regions[i].guest_phys_addr = guest[i];
    table->regions[i].memory_size = size[i];
    table->regions[i].userspace_addr = host[i];
  }
  int result = ioctl(fd, VHOST_SET_MEM_TABLE, table);
  int saved = errno;
  free(table);
  errno = saved;
  return result;
}

int csys_vhost_set_ring_addresses(int fd, unsigned index, uint64_t descriptors, uint64_t available, uint64_t used,
                                  uint64_t log_used) {
  struct vhost_vring_addr address;
  memset(&address, 0, sizeof address);
  address.index = index;
  address.desc_user_addr = descriptors;
  address.avail_user_addr = available;
  address.used_user_addr = used;
  if (log_used != UINT64_MAX) {
    address.flags = 1u << VHOST_VRING_F_LOG;
    address.log_guest_addr = log_used;
  }
  return ioctl(fd, VHOST_SET_VRING_ADDR, &address);
}

int csys_vhost_set_log_base(int fd, uint64_t base) { return ioctl(fd, VHOST_SET_LOG_BASE, &base); }

int csys_vhost_set_ring(int fd, unsigned index, unsigned size, unsigned base, uint64_t descriptors,
                        uint64_t available, uint64_t used, uint64_t log_used, int kick, int call, int error) {
  struct vhost_vring_state number = {.index = index, .num = size};
  if (ioctl(fd, VHOST_SET_VRING_NUM, &number) != 0) return -1;
  struct vhost_vring_state start = {.index = index, .num = base};
  if (ioctl(fd, VHOST_SET_VRING_BASE, &start) != 0) return -1;
  if (csys_vhost_set_ring_addresses(fd, index, descriptors, available, used, log_used) != 0) return -1;
  struct vhost_vring_file kicker = {.index = index, .fd = kick};
  if (ioctl(fd, VHOST_SET_VRING_KICK, &kicker) != 0) return -1;
  struct vhost_vring_file caller = {.index = index, .fd = call};
  if (ioctl(fd, VHOST_SET_VRING_CALL, &caller) != 0) return -1;
  struct vhost_vring_file reporter = {.index = index, .fd = error};
  return ioctl(fd, VHOST_SET_VRING_ERR, &reporter);
}

int csys_vhost_set_call(int fd, unsigned index, int call) {
  struct vhost_vring_file caller = {.index = index, .fd = call};
  return ioctl(fd, VHOST_SET_VRING_CALL, &caller);
}

int csys_vhost_get_ring_base(int fd, unsigned index, unsigned *base) {
  struct vhost_vring_state state = {.index = index, .num = 0};
  if (ioctl(fd, VHOST_GET_VRING_BASE, &state) != 0) return -1;
  *base = state.num;
  return 0;
}

int csys_vhost_set_backend(int fd, unsigned index, int backend) {
  struct vhost_vring_file file = {.index = index, .fd = backend};
  return ioctl(fd, VHOST_NET_SET_BACKEND, &file);
}
