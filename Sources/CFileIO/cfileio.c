#define _GNU_SOURCE
#include <fcntl.h>
#include "cfileio.h"

int cfileio_fallocate(int fd, int mode, off_t offset, off_t length) { return fallocate(fd, mode, offset, length); }
