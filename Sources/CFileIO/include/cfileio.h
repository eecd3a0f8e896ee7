#ifndef CFILEIO_H
#define CFILEIO_H
#include <sys/types.h>

/// fallocate(2), which Swift's Glibc module does not export: 0, or -1 with errno set.
int cfileio_fallocate(int fd, int mode, off_t offset, off_t length);

#endif
