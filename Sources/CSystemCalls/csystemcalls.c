#define _GNU_SOURCE
#include <fcntl.h>
#include <errno.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>
#include "csystemcalls.h"

int csys_fallocate(int fd, int mode, off_t offset, off_t length) { return fallocate(fd, mode, offset, length); }

ssize_t csys_getrandom(void *buffer, size_t length) { return getrandom(buffer, length, 0); }

const int csys_o_direct = O_DIRECT;

int csys_open_data_file(const char *path, int flags, int mode, int *is_block) {
  int fd = open(path, flags | O_NONBLOCK | O_CLOEXEC | O_NOCTTY, mode);
  if (fd < 0) return -1;
  struct stat status;
  if (fstat(fd, &status) != 0) {
    int saved = errno;
    close(fd);
    errno = saved;
    return -1;
  }
  if (!S_ISREG(status.st_mode) && !S_ISBLK(status.st_mode)) {
    close(fd);
    errno = EINVAL;
    return -2;
  }
  if (is_block) *is_block = S_ISBLK(status.st_mode);
  int current = fcntl(fd, F_GETFL);
  if (current < 0 || fcntl(fd, F_SETFL, current & ~O_NONBLOCK) != 0) {
    int saved = errno;
    close(fd);
    errno = saved;
    return -1;
  }
  return fd;
}

int csys_peer_uid(int fd, unsigned int *uid) {
  struct ucred credentials;
  socklen_t length = sizeof credentials;
  if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &credentials, &length) != 0) return -1;
  *uid = credentials.uid;
  return 0;
}

int csys_memfd_create(const char *name) { return memfd_create(name, MFD_CLOEXEC); }

ssize_t csys_copy_file_range(int in_fd, off_t *in_offset, int out_fd, off_t *out_offset, size_t length) {
  return copy_file_range(in_fd, in_offset, out_fd, out_offset, length, 0);
}

int csys_start_writeback(int fd, off_t offset, off_t length) {
  return sync_file_range(fd, offset, length, SYNC_FILE_RANGE_WRITE);
}

const int csys_seek_data = SEEK_DATA;
const int csys_seek_hole = SEEK_HOLE;

int csys_ofd_lock_byte(int fd, off_t offset, int shared) {
  struct flock lock = {.l_type = shared ? F_RDLCK : F_UNLCK, .l_whence = SEEK_SET, .l_start = offset, .l_len = 1};
  return fcntl(fd, F_OFD_SETLK, &lock);
}

int csys_ofd_byte_locked_by_others(int fd, off_t offset) {
  // An exclusive lock would conflict with any lock another description holds on the byte.
  struct flock lock = {.l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = offset, .l_len = 1};
  if (fcntl(fd, F_OFD_GETLK, &lock) != 0) return -1;
  return lock.l_type != F_UNLCK;
}
