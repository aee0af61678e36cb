/*
 * Socket creation for the native datapath: one UDP socket per listen address per thread, joined into
 * one SO_REUSEPORT group so the kernel spreads clients over the threads by flow hash, with kernel
 * receive timestamps switched on. Also a SO_REUSEPORT TCP listener for the NTS-KE threads on Node
 * versions whose net module cannot set that option itself.
 *
 * Every function returns a file descriptor (>= 0) or -errno, and never leaves a descriptor open on error.
 */
#define _GNU_SOURCE
#include "ntsd_udp.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/net_tstamp.h>
#include <netinet/in.h>
#include <string.h>
#include <unistd.h>

/* Fills a sockaddr for family 4 or 6 from raw address octets; returns its length, 0 on a bad family. */
static socklen_t fill_sockaddr(struct sockaddr_storage *ss, int family, const uint8_t *addr, int port) {
  memset(ss, 0, sizeof(*ss));
  if (family == 4) {
    struct sockaddr_in *sin = (struct sockaddr_in *)ss;
    sin->sin_family = AF_INET;
    sin->sin_port = htons((uint16_t)port);
    memcpy(&sin->sin_addr, addr, 4);
    return sizeof(*sin);
  }
  if (family == 6) {
    struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)ss;
    sin6->sin6_family = AF_INET6;
    sin6->sin6_port = htons((uint16_t)port);
    memcpy(&sin6->sin6_addr, addr, 16);
    return sizeof(*sin6);
  }
  return 0;
}

/* Closes fd, keeping errno of the failure that made us give up. */
static int fail(int fd) {
  int e = errno;
  close(fd);
  return -e;
}

int ntsd_open_udp(int family, const uint8_t *addr, int port, int v6only, int reuseport, int rcvbuf,
                  int stamp_mode, const uint8_t *peer, int peer_port) {
  struct sockaddr_storage ss;
  socklen_t len = fill_sockaddr(&ss, family, addr, port);
  if (len == 0) return -EAFNOSUPPORT;
  int fd = socket(family == 4 ? AF_INET : AF_INET6, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return -errno;
  int one = 1;
  if (family == 6) {
    int only = v6only ? 1 : 0;
    if (setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &only, sizeof(only)) < 0) return fail(fd);
  }
  if (reuseport && setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) < 0) return fail(fd);
  if (rcvbuf > 0 && setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof(rcvbuf)) < 0) return fail(fd);
  if (stamp_mode == NTSD_STAMP_RX) {
    /* struct timespec in an SCM_TIMESTAMPNS message on every datagram, taken when the kernel received it. */
    if (setsockopt(fd, SOL_SOCKET, SO_TIMESTAMPNS, &one, sizeof(one)) < 0) return fail(fd);
  } else if (stamp_mode == NTSD_STAMP_RX_TX) {
    /* Software stamps both ways; TX stamps come back on the error queue, numbered by OPT_ID (0, 1, ...)
     * in send order, without the packet (OPT_TSONLY). */
    unsigned int flags = SOF_TIMESTAMPING_RX_SOFTWARE | SOF_TIMESTAMPING_TX_SOFTWARE | SOF_TIMESTAMPING_SOFTWARE |
                         SOF_TIMESTAMPING_OPT_ID | SOF_TIMESTAMPING_OPT_TSONLY;
    if (setsockopt(fd, SOL_SOCKET, SO_TIMESTAMPING, &flags, sizeof(flags)) < 0) return fail(fd);
  } else if (stamp_mode == NTSD_STAMP_RX_TXREQ) {
    /* Software RX stamps on every datagram; a TX stamp only for a reply that asks (udp_txstamp.c). */
    unsigned int flags = ntsd_tx_socket_flags();
    ntsd_tx_ids_count_stamped_only();
    if (setsockopt(fd, SOL_SOCKET, SO_TIMESTAMPING, &flags, sizeof(flags)) < 0) return fail(fd);
  }
  if (bind(fd, (struct sockaddr *)&ss, len) < 0) return fail(fd);
  if (peer != NULL) {
    struct sockaddr_storage ps;
    socklen_t plen = fill_sockaddr(&ps, family, peer, peer_port);
    if (plen == 0 || connect(fd, (struct sockaddr *)&ps, plen) < 0) return fail(fd);
  }
  return fd;
}

int ntsd_local_port(int fd) {
  struct sockaddr_storage ss;
  socklen_t len = sizeof(ss);
  if (getsockname(fd, (struct sockaddr *)&ss, &len) < 0) return -errno;
  if (ss.ss_family == AF_INET) return ntohs(((struct sockaddr_in *)&ss)->sin_port);
  if (ss.ss_family == AF_INET6) return ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
  return -EAFNOSUPPORT;
}

int ntsd_open_tcp_listener(int family, const uint8_t *addr, int port, int v6only, int backlog) {
  struct sockaddr_storage ss;
  socklen_t len = fill_sockaddr(&ss, family, addr, port);
  if (len == 0) return -EAFNOSUPPORT;
  /* Blocking mode and no CLOEXEC flags beyond the default: libuv takes the descriptor over as it is. */
  int fd = socket(family == 4 ? AF_INET : AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -errno;
  int one = 1;
  if (family == 6) {
    int only = v6only ? 1 : 0;
    if (setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &only, sizeof(only)) < 0) return fail(fd);
  }
  if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0) return fail(fd);
  if (setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) < 0) return fail(fd);
  if (bind(fd, (struct sockaddr *)&ss, len) < 0) return fail(fd);
  if (listen(fd, backlog > 0 ? backlog : 511) < 0) return fail(fd);
  return fd;
}
