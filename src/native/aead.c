/*
 * NTS AEADs through OpenSSL (the libcrypto that Node itself links and exports): AEAD_AES_SIV_CMAC_256/384/512
 * (RFC 5297, ids 15/16/17) and AEAD_AES_128_GCM_SIV (RFC 8452, id 30), so that the cookie master key and the
 * C2S/S2C keys run on OpenSSL's AES (AES-NI, or its constant-time fallback) instead of table-driven JavaScript.
 *
 * This file only calls EVP; it implements no block cipher, no MAC and no POLYVAL. One exception, kept small:
 * OpenSSL's SIV (3.0 up to at least 3.5) fails on an empty plaintext (openssl#17268, #26580), which NTS sends
 * in every request whose Authenticator encrypts nothing. For that case S2V (RFC 5297 §2.4) is composed here
 * from EVP_MAC CMAC calls: V = CMAC(K1, dbl(dbl(dbl(CMAC(0^128)) ^ CMAC(AD)) ^ CMAC(N)) ^ 10^127).
 *
 * Layout as NTS uses it (RFC 5116 outputs): SIV writes V || C (the synthetic IV first, RFC 5297 §2.6) with the
 * S2V components (AD, nonce, plaintext), given to OpenSSL as two AAD updates then the data (RFC 5297 §3);
 * GCM-SIV writes C || tag (RFC 8452 §4).
 *
 * Calls from JavaScript: one per operation. The caller passes one ArrayBuffer and octet offsets into it; every
 * region is bounds-checked here before it is touched, and the output is written in place. A key handle is a
 * napi external owning its contexts and its copy of the key; a key may be replaced in the same call as the
 * operation (offset of the new key, or -1), which re-keys lazily: only what the operation needs is keyed.
 * Released handles (aeadFree, or the finalizer) have their key copies cleansed and their contexts freed.
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

#define TAG_LEN 16
#define MAX_KEY_LEN 64

typedef struct {
  int32_t id;           /* IANA AEAD id */
  const char *name;     /* OpenSSL cipher name */
  const char *cmac_cbc; /* SIV: the CBC cipher CMAC runs on (key K1, half the SIV key); NULL for GCM-SIV */
  int key_len;          /* octets */
} alg_info;

static const alg_info ALGS[] = {
    {15, "AES-128-SIV", "AES-128-CBC", 32},
    {16, "AES-192-SIV", "AES-192-CBC", 48},
    {17, "AES-256-SIV", "AES-256-CBC", 64},
    {30, "AES-128-GCM-SIV", NULL, 16},
};
#define ALG_COUNT ((int)(sizeof(ALGS) / sizeof(ALGS[0])))

typedef struct {
  const alg_info *alg;
  EVP_CIPHER *cipher;
  EVP_CIPHER_CTX *tmpl; /* SIV: keyed once per key, copied into `work` per operation */
  EVP_CIPHER_CTX *work; /* the context an operation runs on */
  EVP_MAC *mac;         /* SIV, empty plaintext: CMAC keyed with K1 */
  EVP_MAC_CTX *cmac;
  unsigned char d0[16]; /* CMAC(K1, 0^128) of the current key */
  unsigned char key[MAX_KEY_LEN];
  int tmpl_ready, cmac_ready, released;
  unsigned key_uses; /* SIV messages since the key was set */
} aead_key;

static const unsigned char EMPTY[1] = {0}; /* a valid pointer for zero-length inputs */

static void release_key(aead_key *k) {
  if (k->released) return;
  k->released = 1;
  OPENSSL_cleanse(k->key, sizeof(k->key));
  OPENSSL_cleanse(k->d0, sizeof(k->d0));
  EVP_CIPHER_CTX_free(k->tmpl); /* frees (and clears) the provider contexts with their key schedules */
  EVP_CIPHER_CTX_free(k->work);
  EVP_MAC_CTX_free(k->cmac);
  EVP_MAC_free(k->mac);
  EVP_CIPHER_free(k->cipher);
  k->tmpl = k->work = NULL;
  k->cmac = NULL;
  k->mac = NULL;
  k->cipher = NULL;
}

static void finalize_key(napi_env env, void *data, void *hint) {
  (void)env;
  (void)hint;
  release_key(data);
  OPENSSL_free(data);
}

/* Doubling in GF(2^128) (RFC 5297 §2.3), without branches on the data. */
static void dbl(unsigned char b[16]) {
  unsigned char carry = (unsigned char)(b[0] >> 7);
  for (int i = 0; i < 15; i++) b[i] = (unsigned char)((b[i] << 1) | (b[i + 1] >> 7));
  b[15] = (unsigned char)((b[15] << 1) ^ (0x87 & (0u - carry)));
}

/* out = CMAC(K1, in); the MAC context is restarted with its key (EVP_MAC_init without a key). */
static int cmac(aead_key *k, const unsigned char *in, size_t len, unsigned char out[16]) {
  size_t n = 0;
  return EVP_MAC_init(k->cmac, NULL, 0, NULL) && EVP_MAC_update(k->cmac, in, len) && EVP_MAC_final(k->cmac, out, &n, 16) &&
         n == 16;
}

/* S2V(K1, AD, N, "") into v (or S2V(K1, AD, "") without a nonce): the case OpenSSL's SIV does not handle. */
static int s2v_empty(aead_key *k, const unsigned char *ad, size_t ad_len, const unsigned char *nonce, size_t nonce_len,
                     unsigned char v[16]) {
  unsigned char d[16], m[16];
  int ok = 0;
  if (k->cmac == NULL) { /* once per handle: the CBC cipher is fetched here, not at every key */
    OSSL_PARAM params[] = {OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_CIPHER, (char *)k->alg->cmac_cbc, 0),
                           OSSL_PARAM_construct_end()};
    if ((k->mac == NULL && (k->mac = EVP_MAC_fetch(NULL, "CMAC", NULL)) == NULL) || (k->cmac = EVP_MAC_CTX_new(k->mac)) == NULL ||
        !EVP_MAC_CTX_set_params(k->cmac, params))
      return 0;
  }
  if (!k->cmac_ready) {
    if (!EVP_MAC_init(k->cmac, k->key, (size_t)k->alg->key_len / 2, NULL)) return 0;
    static const unsigned char zero[16] = {0};
    if (!cmac(k, zero, sizeof(zero), k->d0)) return 0;
    k->cmac_ready = 1;
  }
  memcpy(d, k->d0, 16);
  dbl(d);
  if (!cmac(k, ad, ad_len, m)) goto done;
  for (int i = 0; i < 16; i++) d[i] ^= m[i];
  dbl(d);
  if (nonce_len > 0) { /* no nonce: deterministic SIV, S2V(AD, P) */
    if (!cmac(k, nonce, nonce_len, m)) goto done;
    for (int i = 0; i < 16; i++) d[i] ^= m[i];
    dbl(d);
  }
  d[0] ^= 0x80; /* pad("") = 10^127 */
  ok = cmac(k, d, 16, v);
done:
  OPENSSL_cleanse(d, sizeof(d));
  OPENSSL_cleanse(m, sizeof(m));
  return ok;
}

/* SIV: readies `work` for the AD. OpenSSL's SIV context serves one message per key set-up, and the set-up costs
 * about six copies (it fetches CMAC and its ciphers again), so the first message after a key change keys `work`
 * directly (per-request C2S/S2C keys are used once), and a key used again is keyed once into `tmpl`, which
 * each later message copies. */
static int siv_begin(aead_key *k, int enc) {
  if (k->key_uses++ == 0) return EVP_CipherInit_ex2(k->work, k->cipher, k->key, NULL, enc, NULL);
  if (!k->tmpl_ready) {
    if (!EVP_EncryptInit_ex2(k->tmpl, k->cipher, k->key, NULL, NULL)) return 0;
    k->tmpl_ready = 1;
  }
  if (!EVP_CIPHER_CTX_copy(k->work, k->tmpl)) return 0;
  return enc || EVP_DecryptInit_ex2(k->work, NULL, NULL, NULL, NULL);
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
  if (k->alg->cmac_cbc != NULL) {
    if (pt_len == 0) return s2v_empty(k, ad, (size_t)ad_len, nonce, (size_t)nonce_len, out);
    return siv_begin(k, 1) && EVP_EncryptUpdate(k->work, NULL, &n, ad, ad_len) &&
           (nonce_len == 0 || EVP_EncryptUpdate(k->work, NULL, &n, nonce, nonce_len)) && EVP_EncryptUpdate(k->work, out + TAG_LEN, &n, pt, pt_len) &&
           EVP_EncryptFinal_ex(k->work, spare, &n) && EVP_CIPHER_CTX_ctrl(k->work, EVP_CTRL_AEAD_GET_TAG, TAG_LEN, out) > 0;
  }
  return gcm_siv_begin(k, 1, nonce) && (ad_len == 0 || EVP_EncryptUpdate(k->work, NULL, &n, ad, ad_len)) &&
         EVP_EncryptUpdate(k->work, out, &n, pt, pt_len) && EVP_EncryptFinal_ex(k->work, spare, &n) &&
         EVP_CIPHER_CTX_ctrl(k->work, EVP_CTRL_AEAD_GET_TAG, TAG_LEN, out + pt_len) > 0;
}

/* Open: in = V || C (SIV) or C || tag (GCM-SIV), in_len >= TAG_LEN. 1 when the tag verifies. */
static int do_open(aead_key *k, const unsigned char *nonce, int nonce_len, const unsigned char *ad, int ad_len,
                   const unsigned char *in, int in_len, unsigned char *out) {
  int n = 0, c_len = in_len - TAG_LEN;
  unsigned char tag[TAG_LEN], spare[TAG_LEN];
  if (k->alg->cmac_cbc != NULL) {
    memcpy(tag, in, TAG_LEN);
    if (c_len == 0) {
      unsigned char v[TAG_LEN];
      int ok = s2v_empty(k, ad, (size_t)ad_len, nonce, (size_t)nonce_len, v) && CRYPTO_memcmp(v, tag, TAG_LEN) == 0;
      OPENSSL_cleanse(v, sizeof(v));
      return ok;
    }
    return siv_begin(k, 0) && EVP_CIPHER_CTX_ctrl(k->work, EVP_CTRL_AEAD_SET_TAG, TAG_LEN, tag) > 0 &&
           EVP_DecryptUpdate(k->work, NULL, &n, ad, ad_len) && (nonce_len == 0 || EVP_DecryptUpdate(k->work, NULL, &n, nonce, nonce_len)) &&
           EVP_DecryptUpdate(k->work, out, &n, in + TAG_LEN, c_len) && EVP_DecryptFinal_ex(k->work, spare, &n) > 0;
  }
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

/* aeadAlgorithms() → the AEAD ids whose OpenSSL cipher can be fetched. */
static napi_value js_algorithms(napi_env env, napi_callback_info info) {
  (void)info;
  napi_value list;
  if (napi_create_array(env, &list) != napi_ok) return NULL;
  uint32_t at = 0;
  for (int i = 0; i < ALG_COUNT; i++) {
    EVP_CIPHER *c = EVP_CIPHER_fetch(NULL, ALGS[i].name, NULL);
    if (c != NULL) napi_set_element(env, list, at++, make_int(env, ALGS[i].id));
    EVP_CIPHER_free(c);
  }
  ERR_clear_error(); /* a failed fetch leaves an error on this thread's queue */
  return list;
}

/* aeadNew(aeadId, key: Uint8Array) → handle; throws when the id is unknown, the key length is wrong or the
 * cipher cannot be fetched. */
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
  memcpy(k->key, data, len);
  k->cipher = EVP_CIPHER_fetch(NULL, alg->name, NULL);
  k->tmpl = EVP_CIPHER_CTX_new();
  k->work = EVP_CIPHER_CTX_new();
  napi_value handle;
  if (k->cipher == NULL || k->tmpl == NULL || k->work == NULL || napi_create_external(env, k, finalize_key, NULL, &handle) != napi_ok) {
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

/* aeadSeal / aeadOpen (handle, buffer: ArrayBuffer, keyOff, nonceOff, nonceLen, adOff, adLen, inOff, inLen,
 * outOff) → the offset after the output, or -1 when open fails to authenticate. A SIV nonce of length 0 means no
 * nonce component (deterministic SIV, RFC 5297 §2.6; NTS never does this). keyOff >= 0 first replaces the
 * key with the key-length octets there. A region outside the buffer or a bad length throws RangeError (a bug in
 * the caller); every check runs before any octet is read or written. */
static napi_value run(napi_env env, napi_callback_info info, int seal) {
  size_t argc = 10;
  napi_value argv[10];
  void *data = NULL, *base = NULL;
  size_t size = 0;
  int32_t v[8];
  bool is_ab = false;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 10 || napi_get_value_external(env, argv[0], &data) != napi_ok ||
      data == NULL || napi_is_arraybuffer(env, argv[1], &is_ab) != napi_ok || !is_ab ||
      napi_get_arraybuffer_info(env, argv[1], &base, &size) != napi_ok) {
    napi_throw_type_error(env, NULL, "ntsd aead: (handle, ArrayBuffer, 8 offsets and lengths)");
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
  int gcm = k->alg->cmac_cbc == NULL;
  int32_t out_len = seal ? in_len + TAG_LEN : in_len - TAG_LEN;
  if ((key_off >= 0 && !region_ok(key_off, k->alg->key_len, size)) || !region_ok(nonce_off, nonce_len, size) ||
      !region_ok(ad_off, ad_len, size) || !region_ok(in_off, in_len, size) || in_len > (1 << 30) ||
      (out_len >= 0 && !region_ok(out_off, out_len, size)))
    return throw_range(env, "ntsd aead: a region lies outside the buffer");
  unsigned char *b = base;
  if (key_off >= 0) { /* the new key takes effect even when the operation below is refused */
    memcpy(k->key, b + key_off, (size_t)k->alg->key_len);
    k->tmpl_ready = 0;
    k->cmac_ready = 0;
    k->key_uses = 0;
  }
  if (gcm && nonce_len != 12) {
    if (seal) return throw_range(env, "ntsd aead: bad nonce length");
    return make_int(env, -1);
  }
  if (out_len < 0) return make_int(env, -1); /* ciphertext shorter than the tag */
  const unsigned char *nonce = b + nonce_off, *ad = ad_len > 0 ? b + ad_off : EMPTY, *in = in_len > 0 ? b + in_off : EMPTY;
  unsigned char *out = b + out_off;
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
