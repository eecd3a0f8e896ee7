#ifndef CSYSTEMCALLS_H
#define CSYSTEMCALLS_H
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include "cnetwork.h"
#include "cvhost.h"
#include "cprocess.h"

/// fallocate(2), which Swift's Glibc module does not export: 0, or -1 with errno set.
int csys_fallocate(int fd, int mode, off_t offset, off_t length);

/// getrandom(2): bytes written, or -1 with errno set.
ssize_t csys_getrandom(void *buffer, size_t length);

/// Open file description locks (F_OFD_SETLK / F_OFD_GETLK, which need _GNU_SOURCE) on one byte
/// at `offset`. `csys_ofd_lock_byte` takes a shared (read) lock, or releases it when `shared` is 0:
/// 0, or -1 with errno set (EAGAIN: it conflicts). `csys_ofd_byte_locked_by_others` asks whether
/// another open file description holds a lock on the byte: 1 yes, 0 no, -1 with errno set.
int csys_ofd_lock_byte(int fd, off_t offset, int shared);
int csys_ofd_byte_locked_by_others(int fd, off_t offset);

/// O_DIRECT, which Swift's Glibc module hides (it needs _GNU_SOURCE).
extern const int csys_o_direct;

/// Opens `path` for a file the VMM reads as data (an image, a kernel, an initrd) without ever
/// blocking in open(2): O_NONBLOCK first (a FIFO would wait for a writer), then fstat, then
/// blocking mode again. Returns the descriptor; -1 with errno set if open or fstat failed;
/// -2 (errno EINVAL) if the path is neither a regular file nor a block device. `*is_block`
/// tells which it is.
int csys_open_data_file(const char *path, int flags, int mode, int *is_block);

/// The user id of the process on the other end of a connected Unix socket (SO_PEERCRED):
/// 0 with *uid set, or -1 with errno set.
int csys_peer_uid(int fd, unsigned int *uid);

/// memfd_create(2) with MFD_CLOEXEC: an anonymous file for guest RAM. -1 with errno set on failure.
int csys_memfd_create(const char *name);

/// copy_file_range(2): bytes copied (0 at end of input), or -1 with errno set.
ssize_t csys_copy_file_range(int in_fd, off_t *in_offset, int out_fd, off_t *out_offset, size_t length);

/// sync_file_range(2) with SYNC_FILE_RANGE_WRITE: starts writeback of dirty pages in the
/// range (0 length: to the end) without waiting for it; 0 or -1 with errno set.
int csys_start_writeback(int fd, off_t offset, off_t length);

/// lseek's SEEK_DATA and SEEK_HOLE, which Swift's Glibc module hides (they need _GNU_SOURCE).
extern const int csys_seek_data;
extern const int csys_seek_hole;

/// Atomically ORs `bits` into `*word` (relaxed): marking pages in a shared bitmap.
static inline void csys_atomic_or64(uint64_t *word, uint64_t bits) { __atomic_fetch_or(word, bits, __ATOMIC_RELAXED); }

/// Atomically takes `*word`, leaving 0 (acquire and release): collecting a bitmap word.
static inline uint64_t csys_atomic_take64(uint64_t *word) { return __atomic_exchange_n(word, 0, __ATOMIC_ACQ_REL); }

#endif
