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
/// descriptor table, available and used rings, and its kick, call and error eventfds (the
/// kernel signals the last when the ring breaks the rules and it stops serving it).
int csys_vhost_set_ring(int fd, unsigned index, unsigned size, unsigned base, uint64_t descriptors,
                        uint64_t available, uint64_t used, int kick, int call, int error);

/// VHOST_SET_VRING_CALL: the eventfd the kernel signals when it used ring `index`'s buffers
/// (an irqfd raises the guest's interrupt directly). 0, or -1 with errno set.
int csys_vhost_set_call(int fd, unsigned index, int call);

/// VHOST_GET_VRING_BASE: the ring's next available index.
int csys_vhost_get_ring_base(int fd, unsigned index, unsigned *base);

/// VHOST_NET_SET_BACKEND: ring `index` moves frames to and from `backend` (a tap), or stops (-1).
int csys_vhost_set_backend(int fd, unsigned index, int backend);

#endif
