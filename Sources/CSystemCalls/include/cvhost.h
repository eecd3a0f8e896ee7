#ifndef CVHOST_H
#define CVHOST_H
#include <stdint.h>

/// Opens /dev/vhost-net (close-on-exec) and makes this process its owner (VHOST_SET_OWNER).
/// Returns the descriptor, or -1 with errno set.
int csys_vhost_open(void);

/// VHOST_GET_FEATURES / VHOST_SET_FEATURES: 0, or -1 with errno set.
int csys_vhost_get_features(int fd, uint64_t *features);
int csys_vhost_set_features(int fd, uint64_t features);

/// VHOST_SET_MEM_TABLE with `count` regions (guest-physical start, size, host address each).
int csys_vhost_set_memory(int fd, unsigned count, const uint64_t *guest, const uint64_t *size, const uint64_t *host);

/// Sets up ring `index`: its size, the next available index, the host addresses of its
/// descriptor table, available and used rings (see `csys_vhost_set_ring_addresses` for
/// `log_used`), and its kick, call and error eventfds (the kernel signals the last when the
/// ring breaks the rules and it stops serving it).
int csys_vhost_set_ring(int fd, unsigned index, unsigned size, unsigned base, uint64_t descriptors,
                        uint64_t available, uint64_t used, uint64_t log_used, int kick, int call, int error);

/// VHOST_SET_VRING_ADDR: ring `index`'s descriptor table, available and used rings (host
/// addresses); `log_used` is the used ring's guest-physical address, whose writes the kernel
/// then notes in the dirty log, or UINT64_MAX for no logging. 0, or -1 with errno set.
int csys_vhost_set_ring_addresses(int fd, unsigned index, uint64_t descriptors, uint64_t available, uint64_t used,
                                  uint64_t log_used);

/// VHOST_SET_LOG_BASE: the host address of the dirty log (a bit per guest-physical page,
/// page 8·i + j at bit j of byte i), which the kernel writes while VHOST_F_LOG_ALL is negotiated.
int csys_vhost_set_log_base(int fd, uint64_t base);

/// VHOST_F_LOG_ALL: the feature bit that makes the kernel log every write to guest memory.
#define CSYS_VHOST_F_LOG_ALL 26

/// VHOST_SET_VRING_CALL: the eventfd the kernel signals when it used ring `index`'s buffers
/// (an irqfd raises the guest's interrupt directly). 0, or -1 with errno set.
int csys_vhost_set_call(int fd, unsigned index, int call);

/// VHOST_GET_VRING_BASE: the ring's next available index.
int csys_vhost_get_ring_base(int fd, unsigned index, unsigned *base);

/// VHOST_NET_SET_BACKEND: ring `index` moves frames to and from `backend` (a tap), or stops (-1).
int csys_vhost_set_backend(int fd, unsigned index, int backend);

#endif
