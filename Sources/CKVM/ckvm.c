// The few CKVM helpers that need a body: the kick-signal handler and thread naming.
#define _GNU_SOURCE
#include <sys/syscall.h>
#include <unistd.h>
#include "ckvm.h"

#include <pthread.h>

#include <string.h>

static void ckvm_kick_handler(int signal_number) {
  // Nothing to do: delivery alone makes a blocked KVM_RUN return EINTR.
  (void)signal_number;
}

int ckvm_install_kick_handler(void) {
  struct sigaction action;
  memset(&action, 0, sizeof action);
  action.sa_handler = ckvm_kick_handler;
  sigemptyset(&action.sa_mask);
  // SA_RESTART restarts ordinary syscalls a device may be in; KVM_RUN is
  // never restarted (it returns EINTR), which is what kicking relies on.
  action.sa_flags = SA_RESTART;
  return sigaction(ckvm_kick_signal(), &action, NULL);
}

int ckvm_unblock_kick_signal(void) {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, ckvm_kick_signal());
  return pthread_sigmask(SIG_UNBLOCK, &set, NULL);
}

int ckvm_thread_id(void) { return (int)syscall(SYS_gettid); }

int ckvm_set_thread_name(const char *name) {
  return pthread_setname_np(pthread_self(), name);
}
