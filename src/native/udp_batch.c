/*
 * Batched datagram I/O over the shared block (layout in ntsd_udp.h): recvmmsg into the receive slots
 * with each datagram's kernel receive timestamp and peer address, sendmsg/sendmmsg from the transmit
 * slots, each asking for a kernel transmit stamp when its slot says so (udp_txstamp.c reads them).
 *
 * Nothing here allocates: message headers, address and control buffers live on the caller's stack, and
 * payloads go straight into the block. Every length written or read is bounded by NTSD_SLOT_BYTES.
 */
#define _GNU_SOURCE
#include "ntsd_udp.h"

#include <errno.h>
#include <linux/errqueue.h>
#include <linux/net_tstamp.h>
#include <netinet/in.h>
#include <string.h>
#include <time.h>

/* Control space for one datagram: the larger of SCM_TIMESTAMPNS (one timespec) and SCM_TIMESTAMPING
 * (three), with room to spare for anything else the kernel adds. */
#define CONTROL_BYTES 128
/* u64 words of a transmit stamp request (one cmsg with a u32), rounded up. */
#define STAMP_REQUEST_WORDS ((CMSG_SPACE(sizeof(uint32_t)) + 7) / 8)

static double *counters(uint8_t *block) { return (double *)block; }
static uint32_t *meta(uint8_t *block, int slot) {
  return (uint32_t *)(block + NTSD_META_OFFSET + (size_t)slot * NTSD_META_BYTES);
}
static uint8_t *rx_payload(uint8_t *block, int slot) { return block + NTSD_RX_OFFSET + (size_t)slot * NTSD_SLOT_BYTES; }
static uint8_t *tx_payload(uint8_t *block, int slot) { return block + NTSD_TX_OFFSET + (size_t)slot * NTSD_SLOT_BYTES; }

/* Writes a timespec into a slot's timestamp words. */
static void put_stamp(uint32_t *m, const struct timespec *ts) {
  uint64_t sec = (uint64_t)ts->tv_sec;
  m[NTSD_M_TS_SEC_LO] = (uint32_t)sec;
  m[NTSD_M_TS_SEC_HI] = (uint32_t)(sec >> 32);
  m[NTSD_M_TS_NSEC] = (uint32_t)ts->tv_nsec;
}

/* Finds the receive timestamp among a datagram's control messages; returns 1 when there is one. */
static int find_rx_stamp(struct msghdr *h, struct timespec *out) {
  for (struct cmsghdr *c = CMSG_FIRSTHDR(h); c != NULL; c = CMSG_NXTHDR(h, c)) {
    if (c->cmsg_level != SOL_SOCKET) continue;
    if (c->cmsg_type == SCM_TIMESTAMPNS && c->cmsg_len >= CMSG_LEN(sizeof(struct timespec))) {
      memcpy(out, CMSG_DATA(c), sizeof(*out));
      return 1;
    }
    if (c->cmsg_type == SCM_TIMESTAMPING && c->cmsg_len >= CMSG_LEN(sizeof(struct scm_timestamping))) {
      struct scm_timestamping st;
      memcpy(&st, CMSG_DATA(c), sizeof(st));
      *out = st.ts[0]; /* ts[0] is the software stamp */
      return 1;
    }
  }
  return 0;
}

/* Copies a peer address into a slot's address words. */
static void put_address(uint32_t *m, const struct sockaddr_storage *ss) {
  memset(&m[NTSD_M_ADDR], 0, 16);
  if (ss->ss_family == AF_INET) {
    const struct sockaddr_in *sin = (const struct sockaddr_in *)ss;
    m[NTSD_M_FAMILY] = 4;
    m[NTSD_M_PORT] = ntohs(sin->sin_port);
    m[NTSD_M_SCOPE] = 0;
    memcpy(&m[NTSD_M_ADDR], &sin->sin_addr, 4);
  } else {
    const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)ss;
    m[NTSD_M_FAMILY] = 6;
    m[NTSD_M_PORT] = ntohs(sin6->sin6_port);
    m[NTSD_M_SCOPE] = sin6->sin6_scope_id;
    memcpy(&m[NTSD_M_ADDR], &sin6->sin6_addr, 16);
  }
}

/* Rebuilds a slot's peer address as a sockaddr; returns its length. */
static socklen_t get_address(const uint32_t *m, struct sockaddr_storage *ss) {
  memset(ss, 0, sizeof(*ss));
  if (m[NTSD_M_FAMILY] == 4) {
    struct sockaddr_in *sin = (struct sockaddr_in *)ss;
    sin->sin_family = AF_INET;
    sin->sin_port = htons((uint16_t)m[NTSD_M_PORT]);
    memcpy(&sin->sin_addr, &m[NTSD_M_ADDR], 4);
    return sizeof(*sin);
  }
  struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)ss;
  sin6->sin6_family = AF_INET6;
  sin6->sin6_port = htons((uint16_t)m[NTSD_M_PORT]);
  sin6->sin6_scope_id = m[NTSD_M_SCOPE];
  memcpy(&sin6->sin6_addr, &m[NTSD_M_ADDR], 16);
  return sizeof(*sin6);
}

int ntsd_recv_batch(int fd, uint8_t *block) {
  struct mmsghdr msgs[NTSD_SLOTS];
  struct iovec iov[NTSD_SLOTS];
  struct sockaddr_storage peers[NTSD_SLOTS];
  /* uint64_t keeps the control buffers aligned for cmsghdr. */
  uint64_t control[NTSD_SLOTS][CONTROL_BYTES / sizeof(uint64_t)];
  memset(msgs, 0, sizeof(msgs));
  for (int i = 0; i < NTSD_SLOTS; i++) {
    iov[i].iov_base = rx_payload(block, i);
    iov[i].iov_len = NTSD_SLOT_BYTES;
    msgs[i].msg_hdr.msg_iov = &iov[i];
    msgs[i].msg_hdr.msg_iovlen = 1;
    msgs[i].msg_hdr.msg_name = &peers[i];
    msgs[i].msg_hdr.msg_namelen = sizeof(peers[i]);
    msgs[i].msg_hdr.msg_control = control[i];
    msgs[i].msg_hdr.msg_controllen = CONTROL_BYTES;
  }
  int n = recvmmsg(fd, msgs, NTSD_SLOTS, MSG_DONTWAIT, NULL);
  double *c = counters(block);
  if (n < 0) {
    if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) c[NTSD_C_RECV_ERRORS] += 1;
    return 0;
  }
  struct timespec fallback;
  int have_fallback = 0;
  for (int i = 0; i < n; i++) {
    uint32_t *m = meta(block, i);
    struct msghdr *h = &msgs[i].msg_hdr;
    uint32_t flags = 0;
    uint32_t length = msgs[i].msg_len;
    /* The kernel reports the datagram's real length with MSG_TRUNC; only a slot's worth was copied. */
    if ((h->msg_flags & MSG_TRUNC) || length > NTSD_SLOT_BYTES) {
      flags |= NTSD_F_TRUNCATED;
      length = 0;
      c[NTSD_C_TRUNCATED] += 1;
    }
    struct timespec ts;
    if (find_rx_stamp(h, &ts)) {
      flags |= NTSD_F_KERNEL_STAMP;
    } else {
      if (!have_fallback) {
        clock_gettime(CLOCK_REALTIME, &fallback);
        have_fallback = 1;
      }
      ts = fallback;
      c[NTSD_C_NO_STAMP] += 1;
    }
    put_stamp(m, &ts);
    put_address(m, &peers[i]);
    m[NTSD_M_RX_LENGTH] = length;
    m[NTSD_M_RX_FLAGS] = flags;
    m[NTSD_M_TX_LENGTH] = 0;
    m[NTSD_M_TX_STAMP] = 0;
  }
  c[NTSD_C_RECEIVED] += n;
  return n;
}

int ntsd_send_one(int fd, uint8_t *block, int slot, int connected) {
  if (slot < 0 || slot >= NTSD_SLOTS) return 0;
  uint32_t *m = meta(block, slot);
  uint32_t length = m[NTSD_M_TX_LENGTH];
  if (length == 0 || length > NTSD_SLOT_BYTES) return 0;
  struct sockaddr_storage ss;
  struct iovec iov = {.iov_base = tx_payload(block, slot), .iov_len = length};
  uint64_t request[STAMP_REQUEST_WORDS];
  struct msghdr h;
  memset(&h, 0, sizeof(h));
  h.msg_iov = &iov;
  h.msg_iovlen = 1;
  if (!connected) {
    h.msg_name = &ss;
    h.msg_namelen = get_address(m, &ss);
  }
  ntsd_tx_prepare(m, request, &h);
  double *c = counters(block);
  int ok = sendmsg(fd, &h, MSG_DONTWAIT) >= 0;
  ntsd_tx_done(block, m, ok);
  c[ok ? NTSD_C_SENT : NTSD_C_SEND_ERRORS] += 1;
  return ok;
}

int ntsd_send_batch(int fd, uint8_t *block, int count, int connected) {
  struct mmsghdr msgs[NTSD_SLOTS];
  struct iovec iov[NTSD_SLOTS];
  struct sockaddr_storage peers[NTSD_SLOTS];
  uint64_t requests[NTSD_SLOTS][STAMP_REQUEST_WORDS];
  uint32_t *slot_meta[NTSD_SLOTS];
  if (count > NTSD_SLOTS) count = NTSD_SLOTS;
  int k = 0;
  memset(msgs, 0, sizeof(msgs));
  for (int i = 0; i < count; i++) {
    uint32_t *m = meta(block, i);
    uint32_t length = m[NTSD_M_TX_LENGTH];
    if (length == 0 || length > NTSD_SLOT_BYTES) continue;
    iov[k].iov_base = tx_payload(block, i);
    iov[k].iov_len = length;
    msgs[k].msg_hdr.msg_iov = &iov[k];
    msgs[k].msg_hdr.msg_iovlen = 1;
    if (!connected) {
      msgs[k].msg_hdr.msg_name = &peers[k];
      msgs[k].msg_hdr.msg_namelen = get_address(m, &peers[k]);
    }
    ntsd_tx_prepare(m, requests[k], &msgs[k].msg_hdr);
    slot_meta[k] = m;
    k++;
  }
  double *c = counters(block);
  int done = 0;
  while (done < k) {
    int r = sendmmsg(fd, msgs + done, (unsigned int)(k - done), MSG_DONTWAIT);
    if (r < 0) {
      if (errno == EINTR) continue;
      /* The first unsent message failed: count it and go on with the rest. */
      c[NTSD_C_SEND_ERRORS] += 1;
      ntsd_tx_done(block, slot_meta[done], 0);
      done++;
      continue;
    }
    for (int i = done; i < done + r; i++) ntsd_tx_done(block, slot_meta[i], 1);
    c[NTSD_C_SENT] += r;
    done += r;
  }
  return k;
}
