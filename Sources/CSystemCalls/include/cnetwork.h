#ifndef CNETWORK_H
#define CNETWORK_H
#include <stddef.h>
#include <stdint.h>

/// Offload flags for csys_tap_set_offload (TUN_F_* of <linux/if_tun.h>).
extern const unsigned csys_tun_f_csum;
extern const unsigned csys_tun_f_tso4;
extern const unsigned csys_tun_f_tso6;
extern const unsigned csys_tun_f_tso_ecn;
extern const unsigned csys_tun_f_ufo;

/// Opens /dev/net/tun and attaches to the tap `name` (creating it when it does not exist and
/// the caller has CAP_NET_ADMIN) with IFF_TAP | IFF_NO_PI | IFF_VNET_HDR, non-blocking and
/// close-on-exec. `name` may be empty (the kernel picks tapN); the name in use is copied to
/// `actual` (at least 16 bytes). With `multi_queue` the tap is (or must already be) a
/// multiqueue one (IFF_MULTI_QUEUE) and each call attaches one more queue. Returns the
/// descriptor, or -1 with errno set.
int csys_tap_open(const char *name, char *actual, int multi_queue);

/// TUNSETQUEUE: attaches (`enabled`) or detaches one queue of a multiqueue tap or macvtap, so
/// the kernel steers frames only to the attached ones. 0, or -1 with errno set.
int csys_tap_set_queue_enabled(int fd, int enabled);

/// Opens a macvtap's character device (/dev/tapN) non-blocking and turns on its virtio-net
/// header (IFF_TAP | IFF_NO_PI | IFF_VNET_HDR). Returns the descriptor, or -1 with errno set.
int csys_macvtap_open(const char *path);

/// TUNSETVNETHDRSZ: 0, or -1 with errno set.
int csys_tap_set_header_size(int fd, int size);

/// TUNSETOFFLOAD with TUN_F_* flags: 0, or -1 with errno set.
int csys_tap_set_offload(int fd, unsigned flags);

/// TUNSETTXFILTER: the tap hands its reader only frames to these `count` addresses (6 bytes
/// each; past 8 the kernel hashes them) and, with `all_multicast`, every multicast frame;
/// `count` 0 lets every frame through. 0, or -1 with errno set.
int csys_tap_set_filter(int fd, int all_multicast, unsigned count, const uint8_t *addresses);

/// The interface index of `name`, or 0 with errno set.
unsigned csys_interface_index(const char *name);

/// Sets IFF_UP on `name`: 0, or -1 with errno set.
int csys_interface_up(const char *name);

/// Adds interface `name` to bridge `bridge` (SIOCBRADDIF): 0, or -1 with errno set.
int csys_bridge_add(const char *bridge, const char *name);

#endif
