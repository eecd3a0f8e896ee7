#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/if.h>
#include <linux/if_tun.h>
#include <linux/sockios.h>
#include <stdlib.h>
#include <string.h>
#include <linux/if_ether.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>
#include "cnetwork.h"

const unsigned csys_tun_f_csum = TUN_F_CSUM;
const unsigned csys_tun_f_tso4 = TUN_F_TSO4;
const unsigned csys_tun_f_tso6 = TUN_F_TSO6;
const unsigned csys_tun_f_tso_ecn = TUN_F_TSO_ECN;
const unsigned csys_tun_f_ufo = TUN_F_UFO;

static int close_keeping_errno(int fd) {
  int saved = errno;
  close(fd);
  errno = saved;
  return -1;
}

int csys_tap_open(const char *name, char *actual, int multi_queue) {
  if (strlen(name) >= IFNAMSIZ) {
    errno = ENAMETOOLONG;
    return -1;
  }
  int fd = open("/dev/net/tun", O_RDWR | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0) return -1;
  struct ifreq request;
  memset(&request, 0, sizeof request);
  request.ifr_flags = IFF_TAP | IFF_NO_PI | IFF_VNET_HDR | (multi_queue ? IFF_MULTI_QUEUE : 0);
  strncpy(request.ifr_name, name, IFNAMSIZ - 1);
  if (ioctl(fd, TUNSETIFF, &request) != 0) return close_keeping_errno(fd);
  memcpy(actual, request.ifr_name, IFNAMSIZ);
  actual[IFNAMSIZ - 1] = 0;
  return fd;
}

int csys_macvtap_open(const char *path) {
  int fd = open(path, O_RDWR | O_NONBLOCK | O_CLOEXEC | O_NOCTTY);
  if (fd < 0) return -1;
  struct stat status;
  if (fstat(fd, &status) != 0) return close_keeping_errno(fd);
  if (!S_ISCHR(status.st_mode)) {
    close(fd);
    errno = ENODEV;
    return -1;
  }
  struct ifreq request;
  memset(&request, 0, sizeof request);
  if (ioctl(fd, TUNGETIFF, &request) != 0) return close_keeping_errno(fd);
  request.ifr_flags |= IFF_VNET_HDR;
  if (ioctl(fd, TUNSETIFF, &request) != 0) return close_keeping_errno(fd);
  return fd;
}

int csys_tap_set_filter(int fd, int all_multicast, unsigned count, const uint8_t *addresses) {
  struct tun_filter *filter = malloc(sizeof *filter + count * ETH_ALEN);
  if (filter == NULL) return -1;
  filter->flags = all_multicast ? TUN_FLT_ALLMULTI : 0;
  filter->count = (uint16_t)count;
  memcpy(filter->addr, addresses, count * ETH_ALEN);
  int result = ioctl(fd, TUNSETTXFILTER, filter);
  int saved = errno;
  free(filter);
  errno = saved;
  return result;
}

int csys_tap_set_queue_enabled(int fd, int enabled) {
  struct ifreq request;
  memset(&request, 0, sizeof request);
  request.ifr_flags = enabled ? IFF_ATTACH_QUEUE : IFF_DETACH_QUEUE;
  return ioctl(fd, TUNSETQUEUE, &request);
}

int csys_tap_set_header_size(int fd, int size) { return ioctl(fd, TUNSETVNETHDRSZ, &size); }

int csys_tap_set_offload(int fd, unsigned flags) { return ioctl(fd, TUNSETOFFLOAD, (unsigned long)flags); }

static int with_socket(int (*body)(int, void *), void *context);

static int get_index(int sock, void *context) { return ioctl(sock, SIOCGIFINDEX, context); }

unsigned csys_interface_index(const char *name) {
  struct ifreq request;
  memset(&request, 0, sizeof request);
  if (strlen(name) >= IFNAMSIZ) {
    errno = ENAMETOOLONG;
    return 0;
  }
  strncpy(request.ifr_name, name, IFNAMSIZ - 1);
  if (with_socket(get_index, &request) != 0) return 0;
  return (unsigned)request.ifr_ifindex;
}

static int with_socket(int (*body)(int, void *), void *context) {
  int sock = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (sock < 0) return -1;
  int result = body(sock, context);
  if (result != 0) return close_keeping_errno(sock);
  close(sock);
  return 0;
}

static int set_up(int sock, void *context) {
  struct ifreq *request = context;
  if (ioctl(sock, SIOCGIFFLAGS, request) != 0) return -1;
  request->ifr_flags |= IFF_UP;
  return ioctl(sock, SIOCSIFFLAGS, request);
}

int csys_interface_up(const char *name) {
  struct ifreq request;
  memset(&request, 0, sizeof request);
  strncpy(request.ifr_name, name, IFNAMSIZ - 1);
  return with_socket(set_up, &request);
}

static int add_to_bridge(int sock, void *context) { return ioctl(sock, SIOCBRADDIF, context); }

int csys_bridge_add(const char *bridge, const char *name) {
  struct ifreq request;
  memset(&request, 0, sizeof request);
  if (strlen(bridge) >= IFNAMSIZ) {
    errno = ENAMETOOLONG;
    return -1;
  }
  strncpy(request.ifr_name, bridge, IFNAMSIZ - 1);
  request.ifr_ifindex = (int)csys_interface_index(name);
  if (request.ifr_ifindex == 0) return -1;
  return with_socket(add_to_bridge, &request);
}
