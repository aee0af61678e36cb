/*
 * ntsd native UDP layer: shared declarations.
 *
 * This addon does sockets and timestamps only. It never parses NTP: it moves datagrams between the
 * kernel and one shared memory block per socket, and JavaScript (src/ntp/) does the rest.
 *
 * Shared block layout (all offsets in octets; JavaScript mirrors them in src/runtime/addon.ts and checks
 * them against the `layout` object this addon exports):
 *
 *   [0, 64)                         counters, 8 doubles (Counter below), written here, read by JS
 *   [64, 64 + SLOTS*META)           per-slot metadata, META_BYTES each (Meta below, u32 words)
 *   then SLOTS * SLOT_BYTES         receive payloads, one slot per datagram
 *   then SLOTS * SLOT_BYTES         transmit payloads, one slot per reply
 */
#ifndef NTSD_UDP_H
#define NTSD_UDP_H

#include <stdint.h>
#include <sys/socket.h>

/* Datagrams per recvmmsg/sendmmsg call (the "up to 64"). */
#define NTSD_SLOTS 64
/* Octets per payload slot. Larger datagrams are truncated by the kernel, flagged and dropped. */
#define NTSD_SLOT_BYTES 4096
/* Octets of metadata per slot. */
#define NTSD_META_BYTES 64
/* Octets of the counter area. */
#define NTSD_COUNTER_BYTES 64

#define NTSD_META_OFFSET NTSD_COUNTER_BYTES
#define NTSD_RX_OFFSET (NTSD_META_OFFSET + NTSD_SLOTS * NTSD_META_BYTES)
#define NTSD_TX_OFFSET (NTSD_RX_OFFSET + NTSD_SLOTS * NTSD_SLOT_BYTES)
#define NTSD_BLOCK_BYTES (NTSD_TX_OFFSET + NTSD_SLOTS * NTSD_SLOT_BYTES)

/* Counter slots (doubles). */
enum ntsd_counter {
  NTSD_C_RECEIVED = 0,  /* datagrams handed to JS */
  NTSD_C_TRUNCATED = 1, /* datagrams longer than a slot: flagged, length 0 */
  NTSD_C_RECV_ERRORS = 2,
  NTSD_C_SENT = 3,
  NTSD_C_SEND_ERRORS = 4,
  NTSD_C_NO_STAMP = 5,  /* datagrams without a kernel timestamp (the clock was read instead) */
  NTSD_C_TX_STAMPS = 6,  /* transmit stamps read from the error queue */
  NTSD_C_TX_NEXT_ID = 7  /* OPT_ID the kernel gives the next stamped reply (udp_txstamp.c) */
};

/* Metadata words (u32) of one slot. */
enum ntsd_meta {
  NTSD_M_RX_LENGTH = 0,   /* received octets (0 when truncated) */
  NTSD_M_RX_FLAGS = 1,    /* NTSD_F_* */
  NTSD_M_TS_SEC_LO = 2,   /* kernel receive time, CLOCK_REALTIME, seconds (low 32 bits) */
  NTSD_M_TS_SEC_HI = 3,   /* seconds, high 32 bits */
  NTSD_M_TS_NSEC = 4,     /* nanoseconds */
  NTSD_M_FAMILY = 5,      /* 4 or 6 */
  NTSD_M_PORT = 6,        /* peer port, host order */
  NTSD_M_SCOPE = 7,       /* IPv6 scope id */
  NTSD_M_ADDR = 8,        /* 16 octets (4 words): IPv4 in the first 4, or IPv6 */
  NTSD_M_TX_LENGTH = 12,  /* reply octets in the slot's transmit payload (0 = nothing to send) */
  NTSD_M_TX_STAMP = 13,   /* in: NTSD_TX_WANTED asks for a kernel TX stamp of this reply; out: NTSD_TX_ASKED once sent so */
  NTSD_M_TX_ID = 14       /* out: the OPT_ID its TX stamp will carry (valid when NTSD_M_TX_STAMP is NTSD_TX_ASKED) */
};

#define NTSD_TX_WANTED 1u
#define NTSD_TX_ASKED 2u

#define NTSD_F_TRUNCATED 1u
#define NTSD_F_KERNEL_STAMP 2u

/* Timestamping modes of a socket. */
enum ntsd_stamp_mode {
  NTSD_STAMP_NONE = 0,
  NTSD_STAMP_RX = 1,      /* SO_TIMESTAMPNS: receive stamps (servers) */
  NTSD_STAMP_RX_TX = 2,   /* SO_TIMESTAMPING software RX + TX with OPT_ID (load generator) */
  NTSD_STAMP_RX_TXREQ = 3 /* SO_TIMESTAMPING software RX; software TX with OPT_ID only for replies that ask (servers) */
};

/* udp_socket.c: socket creation. Returns fd >= 0 or -errno. */
int ntsd_open_udp(int family, const uint8_t *addr, int port, int v6only, int reuseport, int rcvbuf,
                  int stamp_mode, const uint8_t *peer, int peer_port);
/* Local port of a bound socket, or -errno. */
int ntsd_local_port(int fd);
/* TCP listening socket with SO_REUSEPORT (for NTS-KE threads on Node < 22.12). fd or -errno. */
int ntsd_open_tcp_listener(int family, const uint8_t *addr, int port, int v6only, int backlog);

/* udp_batch.c: batched I/O over a shared block. */
int ntsd_recv_batch(int fd, uint8_t *block);
int ntsd_send_one(int fd, uint8_t *block, int slot, int connected);
int ntsd_send_batch(int fd, uint8_t *block, int count, int connected);

/* udp_txstamp.c: transmit stamps on request, read in batches from the error queue. */
int ntsd_read_tx_stamps(int fd, uint8_t *block, double *out, int max);
/* Sets msg_control of `h` to a SO_TIMESTAMPING request in `control` (CMSG_SPACE(4) octets) when the slot asks. */
void ntsd_tx_prepare(uint32_t *m, uint64_t *control, struct msghdr *h);
/* After a send of a slot prepared above: `sent` 1 or 0; numbers the stamp the kernel will report. */
void ntsd_tx_done(uint8_t *block, uint32_t *m, int sent);
/* Restarts the OPT_ID numbering at 0 (after the counts disagreed); drops queued stamps. 0 or -errno. */
int ntsd_tx_reset(int fd, uint8_t *block);
/* Whether the kernel numbers only sends that ask for a stamp (1), every send (0); probed once. */
int ntsd_tx_ids_count_stamped_only(void);
/* The socket option flags of NTSD_STAMP_RX_TXREQ. */
unsigned int ntsd_tx_socket_flags(void);

#endif
