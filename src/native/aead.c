/*
 * NTS AEADs through OpenSSL (the libcrypto that Node itself links and exports) for JavaScript:
 * AEAD_AES_SIV_CMAC_256/384/512 (RFC 5297, ids 15/16/17) and AEAD_AES_128_GCM_SIV (RFC 8452, id 30), so that
 * the cookie master key and the C2S/S2C keys run on OpenSSL's AES (AES-NI, or its constant-time fallback)
 * instead of table-driven JavaScript.
 *
 * SIV is composed in aead_siv.c from OpenSSL's CMAC (EVP_MAC) and AES-CTR (EVP_CIPHER), fetched once per
 * process: S2V's doublings and XORs and the counter's cleared bits are there, every block operation is
 * OpenSSL's (that file says why OpenSSL's own SIV cipher is not used). GCM-SIV runs on OpenSSL's own
 * "AES-128-GCM-SIV" EVP cipher (OpenSSL 3.2 and later). This file implements no cryptography itself.
 *
 * Layout as NTS uses it (RFC 5116 outputs): SIV writes V || C (the synthetic IV first, RFC 5297 §2.6) with the
 * S2V components (AD, nonce, plaintext) (RFC 5297 §3); GCM-SIV writes C || tag (RFC 8452 §4).
 *
 * Calls from JavaScript: one per operation. The caller passes ArrayBuffers and octet offsets into them (the
 * nonce and the associated data in one; the input, the output and a new key each in that one or in their own);
 * every region is bounds-checked here before it is touched, and the output is written in place. A key handle
 * is a napi external owning its contexts and its copy of the key; a key may be replaced in the same call as
 * the operation, which re-keys lazily: only what the operation needs is keyed. Released handles (aeadFree, or
 * the finalizer) have their key copies cleansed and their contexts freed.
 */
#define NAPI_VERSION 8
#include <node_api.h>
#include <stdint.h>
#include <string.h>

void ntsd_register_aead(napi_env env, napi_value exports);

#ifdef NTSD_NO_OPENSSL
/* Built without OpenSSL headers: export nothing, and JavaScript runs its own AEADs. */
void ntsd_register_aead(napi_env env, napi_value exports) {
  (void)env;
  (void)exports;
}
#else
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/params.h>

#include "aead_siv.h"

#define TAG_LEN 16
#define MAX_KEY_LEN 64

typedef struct {
  int32_t id;       /* IANA AEAD id */
  const char *name; /* OpenSSL cipher name (GCM-SIV), or NULL: SIV, composed in aead_siv.c */
  int key_len;      /* octets */
} alg_info;

static const alg_info ALGS[] = {
    {15, NULL, 32},
    {16, NULL, 48},
    {17, NULL, 64},
    {30, "AES-128-GCM-SIV", 16},
};
#define ALG_COUNT ((int)(sizeof(ALGS) / sizeof(ALGS[0])))

typedef struct {
  const alg_info *alg;
  ntsd_siv *siv;          /* SIV: the key and its keyed CMAC and CTR contexts */
  EVP_CIPHER *cipher;     /* GCM-SIV */
  EVP_CIPHER_CTX *work;   /* GCM-SIV: the context an operation runs on */
  unsigned char key[MAX_KEY_LEN]; /* GCM-SIV */
  int released;
} aead_key;

static const unsigned char EMPTY[1] = {0}; /* a valid pointer for zero-length inputs */

static void release_key(aead_key *k) {
  if (k->released) return;
  k->released = 1;
  OPENSSL_cleanse(k->key, sizeof(k->key));
  ntsd_siv_free(k->siv);
  EVP_CIPHER_CTX_free(k->work); /* frees (and clears) the provider context with its key schedule */
  EVP_CIPHER_free(k->cipher);
  k->siv = NULL;
  k->work = NULL;
  k->cipher = NULL;
}

static void finalize_key(napi_env env, void *data, void *hint) {
  (void)env;
  (void)hint;
  release_key(data);
  OPENSSL_free(data);
}

/* GCM-SIV: a fresh provider context per message (its AAD buffer starts empty), keyed with key and nonce. */
static int gcm_siv_begin(aead_key *k, int enc, const unsigned char *nonce) {
  const EVP_CIPHER *c = k->cipher;
  return enc ? EVP_EncryptInit_ex2(k->work, c, k->key, nonce, NULL) : EVP_DecryptInit_ex2(k->work, c, k->key, nonce, NULL);
}

/* Seal: out = V || C (SIV) or C || tag (GCM-SIV). 1 on success. */
static int do_seal(aead_key *k, const unsigned char *nonce, int nonce_len, const unsigned char *ad, int ad_len,
                   const unsigned char *pt, int pt_len, unsigned char *out) {
  int n = 0;
  unsigned char spare[TAG_LEN];
  if (k->siv != NULL) return ntsd_siv_seal(k->siv, nonce, (size_t)nonce_len, ad, (size_t)ad_len, pt, (size_t)pt_len, out);
  return gcm_siv_begin(k, 1, nonce) && (ad_len == 0 || EVP_EncryptUpdate(k->work, NULL, &n, ad, ad_len)) &&
         EVP_EncryptUpdate(k->work, out, &n, pt, pt_len) && EVP_EncryptFinal_ex(k->work, spare, &n) &&
         EVP_CIPHER_CTX_ctrl(k->work, EVP_CTRL_AEAD_GET_TAG, TAG_LEN, out + pt_len) > 0;
}

/* Open: in = V || C (SIV) or C || tag (GCM-SIV), in_len >= TAG_LEN. 1 when the tag verifies. */
static int do_open(aead_key *k, const unsigned char *nonce, int nonce_len, const unsigned char *ad, int ad_len,
                   const unsigned char *in, int in_len, unsigned char *out) {
  int n = 0, c_len = in_len - TAG_LEN;
  unsigned char tag[TAG_LEN], spare[TAG_LEN];
  if (k->siv != NULL) return ntsd_siv_open(k->siv, nonce, (size_t)nonce_len, ad, (size_t)ad_len, in, (size_t)in_len, out);
  memcpy(tag, in + c_len, TAG_LEN);
  return gcm_siv_begin(k, 0, nonce) && EVP_CIPHER_CTX_ctrl(k->work, EVP_CTRL_AEAD_SET_TAG, TAG_LEN, tag) > 0 &&
         (ad_len == 0 || EVP_DecryptUpdate(k->work, NULL, &n, ad, ad_len)) &&
         EVP_DecryptUpdate(k->work, out, &n, c_len == 0 ? EMPTY : in, c_len) && EVP_DecryptFinal_ex(k->work, spare, &n) > 0;
}

/* ---- N-API ---------------------------------------------------------------------------------------------- */

static const alg_info *find_alg(int32_t id) {
  for (int i = 0; i < ALG_COUNT; i++)
    if (ALGS[i].id == id) return &ALGS[i];
  return NULL;
}

static napi_value throw_range(napi_env env, const char *msg) {
  napi_throw_range_error(env, NULL, msg);
  return NULL;
}

static napi_value make_int(napi_env env, int32_t v) {
  napi_value out = NULL;
  napi_create_int32(env, v, &out);
  return out;
}

/* aeadAlgorithms() → the AEAD ids OpenSSL can provide here (SIV: CMAC and AES-CTR; GCM-SIV: its cipher). */
static napi_value js_algorithms(napi_env env, napi_callback_info info) {
  (void)info;
  napi_value list;
  if (napi_create_array(env, &list) != napi_ok) return NULL;
  uint32_t at = 0;
  for (int i = 0; i < ALG_COUNT; i++) {
    int ok = 0;
    if (ALGS[i].name == NULL) {
      ok = ntsd_siv_available(ALGS[i].key_len);
    } else {
      EVP_CIPHER *c = EVP_CIPHER_fetch(NULL, ALGS[i].name, NULL);
      ok = c != NULL;
      EVP_CIPHER_free(c);
    }
    if (ok) napi_set_element(env, list, at++, make_int(env, ALGS[i].id));
  }
  ERR_clear_error(); /* a failed fetch leaves an error on this thread's queue */
  return list;
}

/* aeadNew(aeadId, key: Uint8Array) → handle; throws when the id is unknown, the key length is wrong or OpenSSL
 * cannot provide the AEAD. */
static napi_value js_new(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  int32_t id = 0;
  napi_typedarray_type type;
  size_t len = 0;
  void *data = NULL;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 2 || napi_get_value_int32(env, argv[0], &id) != napi_ok ||
      napi_get_typedarray_info(env, argv[1], &type, &len, &data, NULL, NULL) != napi_ok || type != napi_uint8_array) {
    napi_throw_type_error(env, NULL, "ntsd aead: aeadNew(aeadId, key: Uint8Array)");
    return NULL;
  }
  const alg_info *alg = find_alg(id);
  if (alg == NULL || len != (size_t)alg->key_len) return throw_range(env, "ntsd aead: unknown AEAD id or wrong key length");
  aead_key *k = OPENSSL_zalloc(sizeof(*k));
  if (k == NULL) return throw_range(env, "ntsd aead: out of memory");
  k->alg = alg;
  int ok;
  if (alg->name == NULL) {
    ok = (k->siv = ntsd_siv_new(alg->key_len, data)) != NULL;
  } else {
    memcpy(k->key, data, len);
    k->cipher = EVP_CIPHER_fetch(NULL, alg->name, NULL);
    k->work = EVP_CIPHER_CTX_new();
    ok = k->cipher != NULL && k->work != NULL;
  }
  napi_value handle;
  if (!ok || napi_create_external(env, k, finalize_key, NULL, &handle) != napi_ok) {
    ERR_clear_error();
    finalize_key(env, k, NULL);
    napi_throw_error(env, NULL, "ntsd aead: OpenSSL cannot provide this AEAD");
    return NULL;
  }
  return handle;
}

/* aeadFree(handle): cleanses the key copies and frees the contexts now (the finalizer would, later). */
static napi_value js_free(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  void *data = NULL;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) == napi_ok && argc == 1 && napi_get_value_external(env, argv[0], &data) == napi_ok &&
      data != NULL)
    release_key(data);
  return NULL;
}

/* True when [off, off + len) lies inside a buffer of `size` octets. */
static int region_ok(int32_t off, int32_t len, size_t size) {
  return off >= 0 && len >= 0 && (uint64_t)off + (uint64_t)len <= (uint64_t)size;
}

/* An optional ArrayBuffer argument: undefined or null means `fallback` (the main buffer). 0 when `value` is
 * something else. */
static int optional_buffer(napi_env env, napi_value value, unsigned char *fallback, size_t fallback_size, unsigned char **base, size_t *size) {
  napi_valuetype t;
  void *p = NULL;
  if (napi_typeof(env, value, &t) != napi_ok) return 0;
  if (t == napi_undefined || t == napi_null) {
    *base = fallback;
    *size = fallback_size;
    return 1;
  }
  if (napi_get_arraybuffer_info(env, value, &p, size) != napi_ok) return 0;
  *base = p;
  return 1;
}

/* aeadSeal / aeadOpen (handle, buffer: ArrayBuffer, keyOff, nonceOff, nonceLen, adOff, adLen, inOff, inLen, outOff,
 * keyBuffer?, inBuffer?, outBuffer?) → the offset after the output, or -1 when open fails to authenticate. The
 * nonce and the associated data are in `buffer`; the key, the input and the output are in their own ArrayBuffer
 * when one is given (undefined: `buffer`). A SIV nonce of length 0 means no nonce component (deterministic SIV,
 * RFC 5297 §2.6; NTS never does this). keyOff >= 0 first replaces the key with the key-length octets there. A
 * region outside its buffer or a bad length throws RangeError (a bug in the caller); every check runs before
 * any octet is read or written. */
static napi_value run(napi_env env, napi_callback_info info, int seal) {
  size_t argc = 13;
  napi_value argv[13];
  void *data = NULL, *base = NULL;
  size_t size = 0, key_size = 0, in_size = 0, out_size = 0;
  unsigned char *key_base = NULL, *in_base = NULL, *out_base = NULL;
  int32_t v[8];
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 10 || napi_get_value_external(env, argv[0], &data) != napi_ok ||
      data == NULL || napi_get_arraybuffer_info(env, argv[1], &base, &size) != napi_ok ||
      !optional_buffer(env, argv[10], base, size, &key_base, &key_size) || !optional_buffer(env, argv[11], base, size, &in_base, &in_size) ||
      !optional_buffer(env, argv[12], base, size, &out_base, &out_size)) {
    napi_throw_type_error(env, NULL, "ntsd aead: (handle, ArrayBuffer, 8 offsets and lengths, 3 optional ArrayBuffers)");
    return NULL;
  }
  for (int i = 0; i < 8; i++) {
    if (napi_get_value_int32(env, argv[2 + i], &v[i]) != napi_ok) {
      napi_throw_type_error(env, NULL, "ntsd aead: offsets and lengths are numbers");
      return NULL;
    }
  }
  aead_key *k = data;
  if (k->released) return throw_range(env, "ntsd aead: key handle was released");
  int32_t key_off = v[0], nonce_off = v[1], nonce_len = v[2], ad_off = v[3], ad_len = v[4], in_off = v[5], in_len = v[6], out_off = v[7];
  int32_t out_len = seal ? in_len + TAG_LEN : in_len - TAG_LEN;
  if ((key_off >= 0 && !region_ok(key_off, k->alg->key_len, key_size)) || !region_ok(nonce_off, nonce_len, size) ||
      !region_ok(ad_off, ad_len, size) || !region_ok(in_off, in_len, in_size) || in_len > (1 << 30) ||
      (out_len >= 0 && !region_ok(out_off, out_len, out_size)))
    return throw_range(env, "ntsd aead: a region lies outside the buffer");
  unsigned char *b = base;
  if (key_off >= 0) { /* the new key takes effect even when the operation below is refused */
    if (k->siv != NULL) ntsd_siv_set_key(k->siv, key_base + key_off);
    else memcpy(k->key, key_base + key_off, (size_t)k->alg->key_len);
  }
  if (k->siv == NULL && nonce_len != 12) {
    if (seal) return throw_range(env, "ntsd aead: bad nonce length");
    return make_int(env, -1);
  }
  if (out_len < 0) return make_int(env, -1); /* ciphertext shorter than the tag */
  const unsigned char *nonce = b + nonce_off, *ad = ad_len > 0 ? b + ad_off : EMPTY, *in = in_len > 0 ? in_base + in_off : EMPTY;
  /* An empty output may sit in an empty ArrayBuffer, whose data pointer is NULL; OpenSSL reads a NULL output as
   * "this update is associated data", so an empty output gets a valid pointer. */
  unsigned char spare_out[1];
  unsigned char *out = out_len > 0 ? out_base + out_off : spare_out;
  int ok = seal ? do_seal(k, nonce, nonce_len, ad, ad_len, in, in_len, out) : do_open(k, nonce, nonce_len, ad, ad_len, in, in_len, out);
  if (ok) return make_int(env, out_off + out_len);
  ERR_clear_error();
  if (out_len > 0) OPENSSL_cleanse(out, (size_t)out_len); /* no partial output on failure */
  if (seal) {
    napi_throw_error(env, NULL, "ntsd aead: OpenSSL failed to seal");
    return NULL;
  }
  return make_int(env, -1);
}

static napi_value js_seal(napi_env env, napi_callback_info info) { return run(env, info, 1); }
static napi_value js_open(napi_env env, napi_callback_info info) { return run(env, info, 0); }

/* Adds aeadAlgorithms, aeadNew, aeadSeal, aeadOpen and aeadFree to the addon's exports. */
void ntsd_register_aead(napi_env env, napi_value exports) {
  static const struct {
    const char *name;
    napi_callback cb;
  } fns[] = {{"aeadAlgorithms", js_algorithms}, {"aeadNew", js_new}, {"aeadSeal", js_seal}, {"aeadOpen", js_open}, {"aeadFree", js_free}};
  for (size_t i = 0; i < sizeof(fns) / sizeof(fns[0]); i++) {
    napi_value fn;
    if (napi_create_function(env, fns[i].name, NAPI_AUTO_LENGTH, fns[i].cb, NULL, &fn) == napi_ok)
      napi_set_named_property(env, exports, fns[i].name, fn);
  }
}
#endif
