#ifndef CPROCESS_H
#define CPROCESS_H
#include <sys/types.h>

/// Starts `path` with `argv`/`envp` in a session of its own (setsid), so that it outlives its
/// parent's session: standard input from `stdin_fd`, standard output and error to `out_fd`,
/// default signal dispositions and an empty signal mask, no other descriptors inherited.
/// 0 and the child's pid in `*pid`, or an errno value.
int csys_spawn_detached(const char *path, char *const argv[], char *const envp[], int stdin_fd, int out_fd,
                        pid_t *pid);

/// pidfd_open(2): a descriptor that polls readable when `pid` exits, or -1 with errno set.
int csys_pidfd_open(pid_t pid);

/// sched_setaffinity(2) of thread `tid` to the CPUs whose bits are set in `mask` (`bytes` long,
/// bit n of byte n/8 for CPU n): 0, or -1 with errno set.
int csys_set_affinity(pid_t tid, const unsigned char *mask, unsigned bytes);

/// sched_getaffinity(2) of thread `tid` into `mask` (as above): 0, or -1 with errno set.
int csys_get_affinity(pid_t tid, unsigned char *mask, unsigned bytes);

#endif
