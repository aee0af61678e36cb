/*
 * Kernel transmit timestamps for the native datapath (RFC 9769 interleaved mode on the server side, and
 * the load generator's client sockets).
 *
 * A server socket in NTSD_STAMP_RX_TXREQ mode has SO_TIMESTAMPING with OPT_ID and OPT_TSONLY but no
 * socket-wide TX flag: a reply asks for its software TX stamp with a SO_TIMESTAMPING control message on
 * its own sendmsg (Linux >= 4.13), so replies to clients in basic mode cost nothing extra. The kernel
 * numbers stamped sends with OPT_ID; this file predicts each stamped reply's number (kept in the block's
 * NTSD_C_TX_NEXT_ID counter, written to the slot's NTSD_M_TX_ID word) so JavaScript can match the stamps
 * it reads later. Whether the kernel counts every send or only stamped ones is probed once on loopback;
 * if JavaScript ever sees the numbers disagree (a send the kernel numbered but reported as failed), it
 * calls ntsd_tx_reset, which restarts the kernel's numbering and ours at 0.
 *
 * Stamps come back on the socket's error queue (it makes the socket poll with POLLERR) and are read in
 * batches with recvmmsg(MSG_ERRQUEUE): one system call for up to NTSD_SLOTS stamps.
 */
#define _GNU_SOURCE
#include "ntsd_udp.h"

#include <errno.h>
#include <linux/errqueue.h>
#include <linux/net_tstamp.h>
#include <netinet/in.h>
#include <node_api.h>
#include <string.h>
#include <unistd.h>

/* Control space of one error-queue message: SCM_TIMESTAMPING (three timespecs) and the extended error. */
#define ERR_CONTROL_BYTES 256
/* Octets of a stamp request: one cmsghdr and a u32 of flags. */
#define REQUEST_BYTES CMSG_SPACE(sizeof(uint32_t))

static double *counters(uint8_t *block) { return (double *)block; }

unsigned int ntsd_tx_socket_flags(void) {
  return SOF_TIMESTAMPING_RX_SOFTWARE | SOF_TIMESTAMPING_SOFTWARE | SOF_TIMESTAMPING_OPT_ID | SOF_TIMESTAMPING_OPT_TSONLY;
}

/* Reads one stamp id from the error queue of fd, waiting up to about 100 ms; -1 when none came. */
static long probe_read_id(int fd) {
  for (int tries = 0; tries < 100; tries++) {
    uint64_t control[ERR_CONTROL_BYTES / sizeof(uint64_t)];
    struct msghdr h;
    memset(&h, 0, sizeof(h));
    h.msg_control = control;
    h.msg_controllen = sizeof(control);
    if (recvmsg(fd, &h, MSG_ERRQUEUE | MSG_DONTWAIT) < 0) {
      usleep(1000);
      continue;
    }
    for (struct cmsghdr *cm = CMSG_FIRSTHDR(&h); cm != NULL; cm = CMSG_NXTHDR(&h, cm)) {
      if (cm->cmsg_level != IPPROTO_IP || cm->cmsg_type != IP_RECVERR) continue;
      struct sock_extended_err ee;
      memcpy(&ee, CMSG_DATA(cm), sizeof(ee));
      if (ee.ee_origin == SO_EE_ORIGIN_TIMESTAMPING) return (long)ee.ee_data;
    }
  }
  return -1;
}

/* Sends one empty datagram from fd to `to`, with a stamp request when `stamped`. */
static void probe_send(int fd, const struct sockaddr_in *to, int stamped) {
  uint64_t control[REQUEST_BYTES / sizeof(uint64_t) + 1];
  struct msghdr h;
  memset(&h, 0, sizeof(h));
  h.msg_name = (void *)to;
  h.msg_namelen = sizeof(*to);
  uint32_t m[NTSD_META_BYTES / 4] = {0};
  m[NTSD_M_TX_STAMP] = stamped ? NTSD_TX_WANTED : 0;
  ntsd_tx_prepare(m, control, &h);
  sendmsg(fd, &h, MSG_DONTWAIT);
}

/* The probe's answer: -1 not probed yet, 1 only stamped sends are numbered, 0 every send is. */
static int probed = -1;

int ntsd_tx_ids_count_stamped_only(void) {
  if (probed >= 0) return probed;
  /* One unstamped send, then a stamped one: its id is 0 when only stamped sends are numbered. */
  int result = 1;
  int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  socklen_t len = sizeof(a);
  unsigned int flags = ntsd_tx_socket_flags();
  if (fd >= 0 && bind(fd, (struct sockaddr *)&a, len) == 0 && getsockname(fd, (struct sockaddr *)&a, &len) == 0 &&
      setsockopt(fd, SOL_SOCKET, SO_TIMESTAMPING, &flags, sizeof(flags)) == 0) {
    probe_send(fd, &a, 0);
    probe_send(fd, &a, 1);
    long id = probe_read_id(fd);
    if (id == 1) result = 0;
  }
  if (fd >= 0) close(fd);
  probed = result;
  return probed;
}

void ntsd_tx_prepare(uint32_t *m, uint64_t *control, struct msghdr *h) {
  if (m[NTSD_M_TX_STAMP] != NTSD_TX_WANTED) return;
  memset(control, 0, REQUEST_BYTES);
  h->msg_control = control;
  h->msg_controllen = REQUEST_BYTES;
  struct cmsghdr *cm = CMSG_FIRSTHDR(h);
  cm->cmsg_level = SOL_SOCKET;
  cm->cmsg_type = SO_TIMESTAMPING;
  cm->cmsg_len = CMSG_LEN(sizeof(uint32_t));
  uint32_t flags = SOF_TIMESTAMPING_TX_SOFTWARE;
  memcpy(CMSG_DATA(cm), &flags, sizeof(flags));
}

void ntsd_tx_done(uint8_t *block, uint32_t *m, int sent) {
  double *c = counters(block);
  int asked = m[NTSD_M_TX_STAMP] == NTSD_TX_WANTED;
  m[NTSD_M_TX_STAMP] = 0;
  if (!sent) return;
  if (asked) {
    m[NTSD_M_TX_ID] = (uint32_t)c[NTSD_C_TX_NEXT_ID];
    m[NTSD_M_TX_STAMP] = NTSD_TX_ASKED;
  }
  /* Sockets are probed when they open (udp_socket.c); no probe here, on the datapath. */
  if (asked || probed == 0) {
    /* The kernel's counter is a u32 that wraps; so does ours. */
    c[NTSD_C_TX_NEXT_ID] = (double)(uint32_t)((uint32_t)c[NTSD_C_TX_NEXT_ID] + 1u);
  }
}

int ntsd_tx_reset(int fd, uint8_t *block) {
  unsigned int flags = ntsd_tx_socket_flags();
  unsigned int without = flags & ~(unsigned int)SOF_TIMESTAMPING_OPT_ID;
  /* Turning OPT_ID off and on restarts the kernel's numbering at 0. Stamps already queued carry the old
   * numbers: drop them first (they are counted as read, never matched). */
  double scratch[3 * NTSD_SLOTS];
  while (ntsd_read_tx_stamps(fd, block, scratch, NTSD_SLOTS) == NTSD_SLOTS) {
  }
  if (setsockopt(fd, SOL_SOCKET, SO_TIMESTAMPING, &without, sizeof(without)) < 0) return -errno;
  if (setsockopt(fd, SOL_SOCKET, SO_TIMESTAMPING, &flags, sizeof(flags)) < 0) return -errno;
  counters(block)[NTSD_C_TX_NEXT_ID] = 0;
  return 0;
}

/* Takes (id, stamp) from one error-queue message; 1 when it is a transmit timestamp. */
static int parse_stamp(struct msghdr *h, uint32_t *id, struct timespec *ts) {
  int have_ts = 0;
  int have_id = 0;
  for (struct cmsghdr *cm = CMSG_FIRSTHDR(h); cm != NULL; cm = CMSG_NXTHDR(h, cm)) {
    if (cm->cmsg_level == SOL_SOCKET && cm->cmsg_type == SCM_TIMESTAMPING &&
        cm->cmsg_len >= CMSG_LEN(sizeof(struct scm_timestamping))) {
      struct scm_timestamping st;
      memcpy(&st, CMSG_DATA(cm), sizeof(st));
      *ts = st.ts[0]; /* ts[0] is the software stamp */
      have_ts = 1;
    } else if ((cm->cmsg_level == IPPROTO_IP && cm->cmsg_type == IP_RECVERR) ||
               (cm->cmsg_level == IPPROTO_IPV6 && cm->cmsg_type == IPV6_RECVERR)) {
      if (cm->cmsg_len < CMSG_LEN(sizeof(struct sock_extended_err))) continue;
      struct sock_extended_err ee;
      memcpy(&ee, CMSG_DATA(cm), sizeof(ee));
      if (ee.ee_errno == ENOMSG && ee.ee_origin == SO_EE_ORIGIN_TIMESTAMPING) {
        *id = ee.ee_data;
        have_id = 1;
      }
    }
  }
  return have_ts && have_id;
}

int ntsd_read_tx_stamps(int fd, uint8_t *block, double *out, int max) {
  struct mmsghdr msgs[NTSD_SLOTS];
  struct iovec iov[NTSD_SLOTS];
  uint8_t data[NTSD_SLOTS][64];
  uint64_t control[NTSD_SLOTS][ERR_CONTROL_BYTES / sizeof(uint64_t)];
  int k = 0;
  while (k < max) {
    int want = max - k < NTSD_SLOTS ? max - k : NTSD_SLOTS;
    memset(msgs, 0, sizeof(msgs[0]) * (size_t)want);
    for (int i = 0; i < want; i++) {
      /* OPT_TSONLY queues no payload; client sockets without it get (the start of) their datagram back. */
      iov[i].iov_base = data[i];
      iov[i].iov_len = sizeof(data[i]);
      msgs[i].msg_hdr.msg_iov = &iov[i];
      msgs[i].msg_hdr.msg_iovlen = 1;
      msgs[i].msg_hdr.msg_control = control[i];
      msgs[i].msg_hdr.msg_controllen = sizeof(control[i]);
    }
    int n = recvmmsg(fd, msgs, (unsigned int)want, MSG_ERRQUEUE | MSG_DONTWAIT, NULL);
    if (n <= 0) break;
    for (int i = 0; i < n; i++) {
      uint32_t id = 0;
      struct timespec ts = {0, 0};
      if (!parse_stamp(&msgs[i].msg_hdr, &id, &ts)) continue;
      out[k * 3] = id;
      out[k * 3 + 1] = (double)ts.tv_sec;
      out[k * 3 + 2] = (double)ts.tv_nsec;
      k++;
    }
    if (n < want) break;
  }
  counters(block)[NTSD_C_TX_STAMPS] += k;
  return k;
}

/* addon.c: the descriptor and block of a live socket handle; -1 when closed (TypeError pending if no handle). */
int ntsd_socket_fd(napi_env env, napi_value v, uint8_t **block);

/* resetTxIds(handle) → 0 or -errno */
static napi_value js_reset_tx_ids(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  napi_value out;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 1) return NULL;
  uint8_t *block = NULL;
  int fd = ntsd_socket_fd(env, argv[0], &block);
  napi_create_int32(env, fd < 0 ? -EBADF : ntsd_tx_reset(fd, block), &out);
  return out;
}

/* Registers resetTxIds and the layout words of this file. */
void ntsd_register_txstamp(napi_env env, napi_value exports, napi_value layout) {
  napi_value fn, v;
  if (napi_create_function(env, "resetTxIds", NAPI_AUTO_LENGTH, js_reset_tx_ids, NULL, &fn) == napi_ok) {
    napi_set_named_property(env, exports, "resetTxIds", fn);
  }
  napi_create_int32(env, NTSD_M_TX_STAMP, &v);
  napi_set_named_property(env, layout, "txStampWord", v);
  napi_create_int32(env, NTSD_M_TX_ID, &v);
  napi_set_named_property(env, layout, "txIdWord", v);
}
