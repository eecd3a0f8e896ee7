#define _GNU_SOURCE
#include "cprocess.h"
#include <sched.h>
#include <signal.h>
#include <string.h>
#include <spawn.h>
#include <sys/syscall.h>
#include <unistd.h>

int csys_spawn_detached(const char *path, char *const argv[], char *const envp[], int stdin_fd, int out_fd,
                        pid_t *pid) {
  posix_spawnattr_t attributes;
  posix_spawn_file_actions_t actions;
  int error = posix_spawnattr_init(&attributes);
  if (error) return error;
  error = posix_spawn_file_actions_init(&actions);
  if (error) {
    posix_spawnattr_destroy(&attributes);
    return error;
  }
  sigset_t empty, defaults;
  sigemptyset(&empty);
  sigfillset(&defaults);
  sigdelset(&defaults, SIGKILL);
  sigdelset(&defaults, SIGSTOP);
  error = posix_spawnattr_setsigmask(&attributes, &empty);
  if (!error) error = posix_spawnattr_setsigdefault(&attributes, &defaults);
  if (!error)
    error = posix_spawnattr_setflags(&attributes, POSIX_SPAWN_SETSID | POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
  if (!error) error = posix_spawn_file_actions_adddup2(&actions, stdin_fd, 0);
  if (!error) error = posix_spawn_file_actions_adddup2(&actions, out_fd, 1);
  if (!error) error = posix_spawn_file_actions_adddup2(&actions, out_fd, 2);
  if (!error) error = posix_spawn_file_actions_addclosefrom_np(&actions, 3);
  if (!error) error = posix_spawn(pid, path, &actions, &attributes, argv, envp);
  posix_spawn_file_actions_destroy(&actions);
  posix_spawnattr_destroy(&attributes);
  return error;
}

int csys_pidfd_open(pid_t pid) { return (int)syscall(SYS_pidfd_open, pid, 0); }

int csys_set_affinity(pid_t tid, const unsigned char *mask, unsigned bytes) {
  cpu_set_t set;
  CPU_ZERO(&set);
  for (unsigned cpu = 0; cpu < bytes * 8 && cpu < CPU_SETSIZE; cpu++)
    if (mask[cpu / 8] & (1u << (cpu % 8))) CPU_SET(cpu, &set);
  return sched_setaffinity(tid, sizeof(set), &set);
}

int csys_get_affinity(pid_t tid, unsigned char *mask, unsigned bytes) {
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(tid, sizeof(set), &set) != 0) return -1;
  memset(mask, 0, bytes);
  for (unsigned cpu = 0; cpu < bytes * 8 && cpu < CPU_SETSIZE; cpu++)
    if (CPU_ISSET(cpu, &set)) mask[cpu / 8] |= (unsigned char)(1u << (cpu % 8));
  return 0;
}
