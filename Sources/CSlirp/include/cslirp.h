#ifndef CSLIRP_H
#define CSLIRP_H
#include <slirp/libslirp.h>

/// Loads libslirp (libslirp.so.0) the first time user networking is asked for, so a VM
/// without it never maps the library or GLib. NULL when loaded; else why not (dlerror's text).
const char *cslirp_load(void);

/// The libslirp functions SwiftKVM uses, called through the loaded library (cslirp_load first).
Slirp *cslirp_new(const SlirpConfig *config, const SlirpCb *callbacks, void *opaque);
void cslirp_cleanup(Slirp *slirp);
void cslirp_pollfds_fill(Slirp *slirp, uint32_t *timeout, SlirpAddPollCb add_poll, void *opaque);
void cslirp_pollfds_poll(Slirp *slirp, int select_error, SlirpGetREventsCb get_revents, void *opaque);
void cslirp_input(Slirp *slirp, const uint8_t *packet, int length);
void cslirp_handle_timer(Slirp *slirp, SlirpTimerId id, void *cb_opaque);
int cslirp_add_hostfwd(Slirp *slirp, int is_udp, struct in_addr host_address, int host_port,
                       struct in_addr guest_address, int guest_port);
const char *cslirp_version_string(void);

#endif
