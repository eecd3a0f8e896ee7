#ifndef CSYSTEMCALLS_H
#define CSYSTEMCALLS_H
#include <stddef.h>
#include <sys/types.h>

/// fallocate(2), which Swift's Glibc module does not export: 0, or -1 with errno set.
int csys_fallocate(int fd, int mode, off_t offset, off_t length);

/// getrandom(2): bytes written, or -1 with errno set.
ssize_t csys_getrandom(void *buffer, size_t length);

/// O_DIRECT, which Swift's Glibc module hides (it needs _GNU_SOURCE).
extern const int csys_o_direct;

#endif
