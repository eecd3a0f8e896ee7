#include <dlfcn.h>
#include <pthread.h>
#include <stddef.h>
#include "cslirp.h"

static struct {
  Slirp *(*new_)(const SlirpConfig *, const SlirpCb *, void *);
  void (*cleanup)(Slirp *);
  void (*pollfds_fill)(Slirp *, uint32_t *, SlirpAddPollCb, void *);
  void (*pollfds_poll)(Slirp *, int, SlirpGetREventsCb, void *);
  void (*input)(Slirp *, const uint8_t *, int);
  void (*handle_timer)(Slirp *, SlirpTimerId, void *);
  int (*add_hostfwd)(Slirp *, int, struct in_addr, int, struct in_addr, int);
  const char *(*version_string)(void);
} library;

static pthread_once_t once = PTHREAD_ONCE_INIT;
static const char *failure = "libslirp was not loaded";

static void *symbol(void *handle, const char *name) {
  void *found = dlsym(handle, name);
  if (found == NULL && failure == NULL) failure = dlerror();
  return found;
}

static void load(void) {
  void *handle = dlopen("libslirp.so.0", RTLD_NOW | RTLD_LOCAL);
  if (handle == NULL) {
    failure = dlerror();
    return;
  }
  failure = NULL;
  library.new_ = symbol(handle, "slirp_new");
  library.cleanup = symbol(handle, "slirp_cleanup");
  library.pollfds_fill = symbol(handle, "slirp_pollfds_fill");
  library.pollfds_poll = symbol(handle, "slirp_pollfds_poll");
  library.input = symbol(handle, "slirp_input");
  library.handle_timer = symbol(handle, "slirp_handle_timer");
  library.add_hostfwd = symbol(handle, "slirp_add_hostfwd");
  library.version_string = symbol(handle, "slirp_version_string");
}

const char *cslirp_load(void) {
  pthread_once(&once, load);
  return failure;
}

Slirp *cslirp_new(const SlirpConfig *config, const SlirpCb *callbacks, void *opaque) {
  return library.new_(config, callbacks, opaque);
}
void cslirp_cleanup(Slirp *slirp) { library.cleanup(slirp); }
void cslirp_pollfds_fill(Slirp *slirp, uint32_t *timeout, SlirpAddPollCb add_poll, void *opaque) {
  library.pollfds_fill(slirp, timeout, add_poll, opaque);
}
void cslirp_pollfds_poll(Slirp *slirp, int select_error, SlirpGetREventsCb get_revents, void *opaque) {
  library.pollfds_poll(slirp, select_error, get_revents, opaque);
}
void cslirp_input(Slirp *slirp, const uint8_t *packet, int length) { library.input(slirp, packet, length); }
void cslirp_handle_timer(Slirp *slirp, SlirpTimerId id, void *cb_opaque) {
  library.handle_timer(slirp, id, cb_opaque);
}
int cslirp_add_hostfwd(Slirp *slirp, int is_udp, struct in_addr host_address, int host_port,
                       struct in_addr guest_address, int guest_port) {
  return library.add_hostfwd(slirp, is_udp, host_address, host_port, guest_address, guest_port);
}
const char *cslirp_version_string(void) { return library.version_string(); }
