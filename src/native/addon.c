/*
 * N-API glue of the native UDP layer: turns JavaScript calls into the socket functions of udp_socket.c
 * and udp_batch.c, and wakes JavaScript through a uv_poll on the socket's descriptor, on the libuv loop
 * of the thread that started it (each worker_threads thread has its own).
 *
 * Lifetime. A socket handle is a napi external owning the descriptor, the poll handle and a reference
 * that keeps its shared block (an ArrayBuffer) alive. It is released by close(), by the environment
 * cleanup hook when its thread ends (a worker that exits or is terminated), or by the finalizer when it
 * is collected, whichever comes first; the others then do nothing.
 *
 * Errors: socket calls return -errno as a number for JavaScript to name; wrong argument types throw a
 * TypeError (a bug in the caller, never something a peer can cause).
 */
#define NAPI_VERSION 8
#define _GNU_SOURCE
#include "ntsd_udp.h"

#include <node_api.h>
#include <sys/socket.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>

typedef struct {
  int fd;
  int connected;
  int closed;
  int cleanup_registered;
  uint8_t *block;
  napi_env env;
  napi_ref block_ref;
  uv_poll_t *poll;
  napi_ref callback_ref;
  napi_async_context async_context;
} ntsd_socket;

#define CHECK(env, call)                                   \
  do {                                                     \
    if ((call) != napi_ok) {                               \
      napi_throw_type_error((env), NULL, "ntsd_udp: " #call); \
      return NULL;                                         \
    }                                                      \
  } while (0)

/* The poll handle is freed by libc's free() as its close callback, not by a function of this addon: Node may
 * unload the addon before an ending worker's loop runs its closing handles. free(void *) and uv_close_cb
 * agree on every ABI Node runs on (one pointer argument, no result used). */
#define FREE_ON_CLOSE ((uv_close_cb)(void (*)(void))free)

/* Stops polling and closes the descriptor; no napi calls, so it is safe in the cleanup hook. */
static void release_os_resources(ntsd_socket *s) {
  if (s->closed) return;
  s->closed = 1;
  if (s->poll != NULL) {
    uv_poll_stop(s->poll);
    s->poll->data = NULL;
    uv_close((uv_handle_t *)s->poll, FREE_ON_CLOSE);
    s->poll = NULL;
  }
  close(s->fd);
  s->fd = -1;
}

/* Drops the JavaScript references the socket holds (needs a live environment). */
static void release_references(ntsd_socket *s) {
  if (s->callback_ref != NULL) {
    napi_delete_reference(s->env, s->callback_ref);
    s->callback_ref = NULL;
  }
  if (s->async_context != NULL) {
    napi_async_destroy(s->env, s->async_context);
    s->async_context = NULL;
  }
  if (s->block_ref != NULL) {
    napi_delete_reference(s->env, s->block_ref);
    s->block_ref = NULL;
  }
}

static void on_env_cleanup(void *arg) {
  ntsd_socket *s = arg;
  s->cleanup_registered = 0;
  release_os_resources(s);
}

static void on_finalize(napi_env env, void *data, void *hint) {
  (void)hint;
  ntsd_socket *s = data;
  release_os_resources(s);
  if (s->cleanup_registered) napi_remove_env_cleanup_hook(env, on_env_cleanup, s);
  release_references(s);
  free(s);
}

static ntsd_socket *get_socket(napi_env env, napi_value v) {
  void *data = NULL;
  if (napi_get_value_external(env, v, &data) != napi_ok || data == NULL) {
    napi_throw_type_error(env, NULL, "ntsd_udp: not a socket handle");
    return NULL;
  }
  return data;
}

/* For udp_txstamp.c: the descriptor and block of a live handle; -1 when closed or not a handle. */
int ntsd_socket_fd(napi_env env, napi_value v, uint8_t **block) {
  ntsd_socket *s = get_socket(env, v);
  if (s == NULL || s->closed) return -1;
  *block = s->block;
  return s->fd;
}

/* Reads up to `n` arguments into argv (missing ones are undefined) and the socket handle in argv[0];
 * NULL with a TypeError pending when argv[0] is not one. */
static ntsd_socket *socket_call(napi_env env, napi_callback_info info, napi_value *argv, size_t n) {
  size_t argc = n;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok) {
    napi_throw_type_error(env, NULL, "ntsd_udp: bad call");
    return NULL;
  }
  return get_socket(env, argv[0]);
}

static int32_t get_i32(napi_env env, napi_value v) {
  int32_t out = 0;
  return napi_get_value_int32(env, v, &out) == napi_ok ? out : 0;
}

static napi_value make_i32(napi_env env, int32_t v) {
  napi_value out;
  napi_create_int32(env, v, &out);
  return out;
}

/* Reads a Uint8Array of exactly `want` octets; NULL (and a TypeError) otherwise. */
static const uint8_t *get_address_bytes(napi_env env, napi_value v, size_t want) {
  napi_typedarray_type type;
  size_t length = 0;
  void *data = NULL;
  if (napi_get_typedarray_info(env, v, &type, &length, &data, NULL, NULL) != napi_ok || type != napi_uint8_array ||
      length != want) {
    napi_throw_type_error(env, NULL, "ntsd_udp: address must be a Uint8Array of 4 or 16 octets");
    return NULL;
  }
  return data;
}

/* openUdp(family, addr, port, v6only, reuseport, rcvbuf, stampMode, peer | null, peerPort, block) */
static napi_value js_open_udp(napi_env env, napi_callback_info info) {
  size_t argc = 10;
  napi_value argv[10];
  CHECK(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (argc < 10) {
    napi_throw_type_error(env, NULL, "ntsd_udp: openUdp takes 10 arguments");
    return NULL;
  }
  int family = get_i32(env, argv[0]);
  size_t want = family == 6 ? 16 : 4;
  const uint8_t *addr = get_address_bytes(env, argv[1], want);
  if (addr == NULL) return NULL;
  napi_valuetype peer_type;
  CHECK(env, napi_typeof(env, argv[7], &peer_type));
  const uint8_t *peer = NULL;
  if (peer_type != napi_null && peer_type != napi_undefined) {
    peer = get_address_bytes(env, argv[7], want);
    if (peer == NULL) return NULL;
  }
  void *block = NULL;
  size_t block_bytes = 0;
  bool is_ab = false;
  CHECK(env, napi_is_arraybuffer(env, argv[9], &is_ab));
  if (!is_ab) {
    napi_throw_type_error(env, NULL, "ntsd_udp: block must be an ArrayBuffer");
    return NULL;
  }
  CHECK(env, napi_get_arraybuffer_info(env, argv[9], &block, &block_bytes));
  if (block_bytes < NTSD_BLOCK_BYTES) {
    napi_throw_range_error(env, NULL, "ntsd_udp: block is smaller than layout.blockBytes");
    return NULL;
  }
  int fd = ntsd_open_udp(family, addr, get_i32(env, argv[2]), get_i32(env, argv[3]), get_i32(env, argv[4]),
                         get_i32(env, argv[5]), get_i32(env, argv[6]), peer, get_i32(env, argv[8]));
  if (fd < 0) return make_i32(env, fd);
  ntsd_socket *s = calloc(1, sizeof(*s));
  if (s == NULL) {
    close(fd);
    napi_throw_error(env, NULL, "ntsd_udp: out of memory");
    return NULL;
  }
  s->fd = fd;
  s->connected = peer != NULL;
  s->block = block;
  s->env = env;
  napi_value handle;
  if (napi_create_reference(env, argv[9], 1, &s->block_ref) != napi_ok ||
      napi_create_external(env, s, on_finalize, NULL, &handle) != napi_ok) {
    release_os_resources(s);
    release_references(s);
    free(s);
    napi_throw_error(env, NULL, "ntsd_udp: cannot create a socket handle");
    return NULL;
  }
  if (napi_add_env_cleanup_hook(env, on_env_cleanup, s) == napi_ok) s->cleanup_registered = 1;
  return handle;
}

static napi_value js_local_port(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  ntsd_socket *s = socket_call(env, info, argv, 1);
  if (s == NULL) return NULL;
  return make_i32(env, s->closed ? -9 /* EBADF */ : ntsd_local_port(s->fd));
}

static napi_value js_recv(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  ntsd_socket *s = socket_call(env, info, argv, 1);
  if (s == NULL) return NULL;
  return make_i32(env, s->closed ? 0 : ntsd_recv_batch(s->fd, s->block));
}

static napi_value js_send_one(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  ntsd_socket *s = socket_call(env, info, argv, 2);
  if (s == NULL) return NULL;
  return make_i32(env, s->closed ? 0 : ntsd_send_one(s->fd, s->block, get_i32(env, argv[1]), s->connected));
}

static napi_value js_send_batch(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  ntsd_socket *s = socket_call(env, info, argv, 2);
  if (s == NULL) return NULL;
  return make_i32(env, s->closed ? 0 : ntsd_send_batch(s->fd, s->block, get_i32(env, argv[1]), s->connected));
}

/* readTxStamps(handle, Float64Array out) → triples (id, seconds, nanoseconds) written */
static napi_value js_read_tx_stamps(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  ntsd_socket *s = socket_call(env, info, argv, 2);
  if (s == NULL) return NULL;
  napi_typedarray_type type;
  size_t length = 0;
  void *data = NULL;
  if (napi_get_typedarray_info(env, argv[1], &type, &length, &data, NULL, NULL) != napi_ok || type != napi_float64_array) {
    napi_throw_type_error(env, NULL, "ntsd_udp: readTxStamps needs a Float64Array");
    return NULL;
  }
  if (s->closed) return make_i32(env, 0);
  return make_i32(env, ntsd_read_tx_stamps(s->fd, s->block, data, (int)(length / 3)));
}

static void on_poll(uv_poll_t *poll, int status, int events) {
  (void)events;
  ntsd_socket *s = poll->data;
  if (s == NULL || s->closed || s->callback_ref == NULL) return;
  if (status < 0) {
    /* libuv stops a poll handle whose descriptor reports POLLERR: a pending socket error, or transmit stamps
     * on the error queue (JavaScript reads those). Neither may end the datapath: read SO_ERROR (which
     * clears an error; 0 means only stamps), count a real error, and poll again. */
    int err = 0;
    socklen_t len = sizeof(err);
    getsockopt(s->fd, SOL_SOCKET, SO_ERROR, &err, &len);
    if (err != 0) ((double *)s->block)[NTSD_C_RECV_ERRORS] += 1;
    uv_poll_start(poll, UV_READABLE, on_poll);
  }
  napi_env env = s->env;
  napi_handle_scope scope;
  if (napi_open_handle_scope(env, &scope) != napi_ok) return;
  napi_value fn, recv, result, error_queue;
  napi_get_boolean(env, status < 0, &error_queue); /* callback(true): POLLERR, read the error queue */
  if (napi_get_reference_value(env, s->callback_ref, &fn) == napi_ok && fn != NULL && napi_get_global(env, &recv) == napi_ok) {
    /* make_callback (not call_function): runs the microtask queue afterwards, as libuv callbacks do. */
    if (napi_make_callback(env, s->async_context, recv, fn, 1, &error_queue, &result) == napi_pending_exception) {
      napi_value error;
      /* A throw in the datapath is a bug: let the thread die like any uncaught exception. */
      if (napi_get_and_clear_last_exception(env, &error) == napi_ok) napi_fatal_exception(env, error);
    }
  }
  napi_close_handle_scope(env, scope);
}

/* start(handle, callback): calls callback(errorQueue) whenever the socket is readable, or has an error or stamps queued. */
static napi_value js_start(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  ntsd_socket *s = socket_call(env, info, argv, 2);
  if (s == NULL) return NULL;
  if (s->closed || s->poll != NULL) return make_i32(env, -9);
  napi_valuetype t;
  CHECK(env, napi_typeof(env, argv[1], &t));
  if (t != napi_function) {
    napi_throw_type_error(env, NULL, "ntsd_udp: start needs a callback");
    return NULL;
  }
  uv_loop_t *loop = NULL;
  CHECK(env, napi_get_uv_event_loop(env, &loop));
  napi_value name;
  CHECK(env, napi_create_string_utf8(env, "ntsd:udp", NAPI_AUTO_LENGTH, &name));
  CHECK(env, napi_create_reference(env, argv[1], 1, &s->callback_ref));
  CHECK(env, napi_async_init(env, NULL, name, &s->async_context));
  uv_poll_t *poll = calloc(1, sizeof(*poll));
  if (poll == NULL) return make_i32(env, -12);
  int r = uv_poll_init(loop, poll, s->fd);
  if (r < 0) {
    free(poll);
    return make_i32(env, r);
  }
  poll->data = s;
  s->poll = poll;
  r = uv_poll_start(poll, UV_READABLE, on_poll);
  return make_i32(env, r);
}

static napi_value js_close(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  ntsd_socket *s = socket_call(env, info, argv, 1);
  if (s == NULL) return NULL;
  release_os_resources(s);
  if (s->cleanup_registered) {
    napi_remove_env_cleanup_hook(env, on_env_cleanup, s);
    s->cleanup_registered = 0;
  }
  release_references(s);
  return NULL;
}

/* realtime(Float64Array out): out[0] = seconds, out[1] = nanoseconds of CLOCK_REALTIME, the clock the
 * kernel's receive stamps come from. */
static napi_value js_realtime(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  CHECK(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  napi_typedarray_type type;
  size_t length = 0;
  void *data = NULL;
  if (napi_get_typedarray_info(env, argv[0], &type, &length, &data, NULL, NULL) != napi_ok || type != napi_float64_array || length < 2) {
    napi_throw_type_error(env, NULL, "ntsd_udp: realtime needs a Float64Array of 2");
    return NULL;
  }
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  ((double *)data)[0] = (double)ts.tv_sec;
  ((double *)data)[1] = (double)ts.tv_nsec;
  return NULL;
}

/* openTcpListener(family, addr, port, v6only, backlog) → fd or -errno */
static napi_value js_open_tcp_listener(napi_env env, napi_callback_info info) {
  size_t argc = 5;
  napi_value argv[5];
  CHECK(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  int family = get_i32(env, argv[0]);
  const uint8_t *addr = get_address_bytes(env, argv[1], family == 6 ? 16 : 4);
  if (addr == NULL) return NULL;
  return make_i32(env, ntsd_open_tcp_listener(family, addr, get_i32(env, argv[2]), get_i32(env, argv[3]), get_i32(env, argv[4])));
}

static void set_i32(napi_env env, napi_value obj, const char *name, int32_t v) {
  napi_set_named_property(env, obj, name, make_i32(env, v));
}

static napi_value set_function(napi_env env, napi_value exports, const char *name, napi_callback cb) {
  napi_value fn;
  if (napi_create_function(env, name, NAPI_AUTO_LENGTH, cb, NULL, &fn) != napi_ok) return NULL;
  napi_set_named_property(env, exports, name, fn);
  return fn;
}

/* aead.c: the OpenSSL AEADs (aeadAlgorithms, aeadNew, aeadSeal, aeadOpen, aeadFree). */
void ntsd_register_aead(napi_env env, napi_value exports);
/* udp_txstamp.c: resetTxIds and its layout words. */
void ntsd_register_txstamp(napi_env env, napi_value exports, napi_value layout);

NAPI_MODULE_INIT() {
  ntsd_register_aead(env, exports);
  set_function(env, exports, "openUdp", js_open_udp);
  set_function(env, exports, "localPort", js_local_port);
  set_function(env, exports, "recv", js_recv);
  set_function(env, exports, "sendOne", js_send_one);
  set_function(env, exports, "sendBatch", js_send_batch);
  set_function(env, exports, "readTxStamps", js_read_tx_stamps);
  set_function(env, exports, "start", js_start);
  set_function(env, exports, "close", js_close);
  set_function(env, exports, "realtime", js_realtime);
  set_function(env, exports, "openTcpListener", js_open_tcp_listener);
  napi_value layout;
  napi_create_object(env, &layout);
  set_i32(env, layout, "slots", NTSD_SLOTS);
  set_i32(env, layout, "slotBytes", NTSD_SLOT_BYTES);
  set_i32(env, layout, "metaBytes", NTSD_META_BYTES);
  set_i32(env, layout, "metaOffset", NTSD_META_OFFSET);
  set_i32(env, layout, "rxOffset", NTSD_RX_OFFSET);
  set_i32(env, layout, "txOffset", NTSD_TX_OFFSET);
  set_i32(env, layout, "blockBytes", NTSD_BLOCK_BYTES);
  set_i32(env, layout, "txLengthWord", NTSD_M_TX_LENGTH);
  set_i32(env, layout, "addrWord", NTSD_M_ADDR);
  ntsd_register_txstamp(env, exports, layout);
  napi_set_named_property(env, exports, "layout", layout);
  return exports;
}
