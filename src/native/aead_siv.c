/*
 * AES-SIV (RFC 5297: AEAD_AES_SIV_CMAC_256/384/512, NTS AEADs 15/16/17) composed from two OpenSSL primitives:
 * S2V (§2.4) over OpenSSL's CMAC through EVP_MAC, and the encryption (§2.6, §2.7) with OpenSSL's AES-CTR through
 * EVP_CIPHER. This file writes no block cipher and no MAC: AES, CMAC's block chaining and its subkeys all stay
 * in OpenSSL. What is here is SIV's glue: dbl() in GF(2^128), the XORs of S2V, "xorend" and pad() of its last
 * component, and clearing bits 31 and 63 of V for the counter (§2.6).
 *
 * Why not OpenSSL's own "AES-xxx-SIV" cipher: on OpenSSL 3.0 (Node 20) setting its key fetches CMAC and its
 * ciphers again every time (about 1.9 µs, while NTS sets a new C2S and S2C key for every request), every AAD
 * update duplicates a CMAC context, and it refuses an empty plaintext (openssl#26580), which NTS sends in
 * most requests. Here the CMAC implementation and the CTR cipher are fetched once per process; a key slot keeps
 * one CMAC context (whose cipher parameter is set once, so EVP_MAC_init with a new key re-keys without a
 * fetch) and one AES-CTR context (re-keyed with EVP_EncryptInit_ex2 and no cipher). A new key costs one
 * EVP_MAC_init plus CMAC(K1, 0^128), and the CTR key schedule only when the message has a plaintext.
 *
 * Key-derived state (the key copy, dbl(CMAC(0^128)), the cached associated-data step) is cleansed when the key is
 * replaced or the slot freed; OpenSSL clears its own key schedules when their contexts are freed.
 */
#ifndef NTSD_NO_OPENSSL /* built without OpenSSL headers: aead.c exports no AEAD, and this file is empty */
#include "aead_siv.h"

#include <limits.h>
#include <pthread.h>
#include <string.h>

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/params.h>

#define BLOCK 16
#define MAX_KEY 64

struct ntsd_siv {
  EVP_MAC_CTX *cmac;   /* CMAC keyed with K1 (the left half of the key) */
  EVP_CIPHER_CTX *ctr; /* AES-CTR, keyed with K2 (the right half) when ctr_keyed */
  size_t half;         /* octets of K1 and of K2 */
  int cmac_keyed;      /* cmac holds K1 of `key`, and d0 is its value */
  int cmac_fresh;      /* cmac was just keyed and has not run: no restart needed */
  int ctr_keyed;       /* ctr holds K2 of `key` */
  int ad_len;          /* length of the associated data whose S2V step ad_d holds, or -1 */
  unsigned char key[MAX_KEY];
  unsigned char d0[BLOCK];   /* dbl(CMAC(K1, 0^128)) */
  unsigned char ad[BLOCK];   /* the associated data of ad_d (public in NTS: a cookie's key id) */
  unsigned char ad_d[BLOCK]; /* d0 ^ CMAC(K1, ad) */
};

/* Fetched once per process and never freed (the addon lives as long as the process). */
static pthread_once_t fetch_once = PTHREAD_ONCE_INIT;
static EVP_MAC *cmac_alg;
static EVP_CIPHER *ctr_alg[3]; /* AES-128-CTR, AES-192-CTR, AES-256-CTR */
static const char *const CBC_NAMES[3] = {"AES-128-CBC", "AES-192-CBC", "AES-256-CBC"};

static void fetch_all(void) {
  static const char *const ctr_names[3] = {"AES-128-CTR", "AES-192-CTR", "AES-256-CTR"};
  cmac_alg = EVP_MAC_fetch(NULL, "CMAC", NULL);
  for (int i = 0; i < 3; i++) ctr_alg[i] = EVP_CIPHER_fetch(NULL, ctr_names[i], NULL);
  ERR_clear_error();
}

/* 0, 1, 2 for SIV keys of 32, 48, 64 octets; -1 otherwise. */
static int size_index(int key_len) { return key_len == 32 ? 0 : key_len == 48 ? 1 : key_len == 64 ? 2 : -1; }

int ntsd_siv_available(int key_len) {
  int i = size_index(key_len);
  if (i < 0 || pthread_once(&fetch_once, fetch_all) != 0) return 0;
  return cmac_alg != NULL && ctr_alg[i] != NULL;
}

static void forget_key_state(ntsd_siv *s) {
  OPENSSL_cleanse(s->d0, sizeof(s->d0));
  OPENSSL_cleanse(s->ad_d, sizeof(s->ad_d));
  s->cmac_keyed = s->cmac_fresh = s->ctr_keyed = 0;
  s->ad_len = -1;
}

void ntsd_siv_free(ntsd_siv *s) {
  if (s == NULL) return;
  forget_key_state(s);
  OPENSSL_cleanse(s->key, sizeof(s->key));
  EVP_MAC_CTX_free(s->cmac); /* frees and clears CMAC's cipher contexts with their key schedules */
  EVP_CIPHER_CTX_free(s->ctr);
  OPENSSL_free(s);
}

ntsd_siv *ntsd_siv_new(int key_len, const unsigned char *key) {
  int i = size_index(key_len);
  if (!ntsd_siv_available(key_len)) return NULL;
  ntsd_siv *s = OPENSSL_zalloc(sizeof(*s));
  if (s == NULL) return NULL;
  s->half = (size_t)key_len / 2;
  s->ad_len = -1;
  s->cmac = EVP_MAC_CTX_new(cmac_alg);
  s->ctr = EVP_CIPHER_CTX_new();
  OSSL_PARAM params[] = {OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_CIPHER, (char *)CBC_NAMES[i], 0), OSSL_PARAM_construct_end()};
  /* The cipher parameter is set here, once: afterwards EVP_MAC_init(ctx, key, len, NULL) only re-keys. */
  if (s->cmac == NULL || s->ctr == NULL || !EVP_MAC_CTX_set_params(s->cmac, params) ||
      !EVP_EncryptInit_ex2(s->ctr, ctr_alg[i], NULL, NULL, NULL)) {
    ERR_clear_error();
    ntsd_siv_free(s);
    return NULL;
  }
  ntsd_siv_set_key(s, key);
  return s;
}

void ntsd_siv_set_key(ntsd_siv *s, const unsigned char *key) {
  forget_key_state(s);
  memcpy(s->key, key, 2 * s->half);
}

/* Doubling in GF(2^128) (RFC 5297 §2.3), without branches on the data. */
static void dbl(unsigned char b[BLOCK]) {
  unsigned char carry = (unsigned char)(b[0] >> 7);
  for (int i = 0; i < BLOCK - 1; i++) b[i] = (unsigned char)((b[i] << 1) | (b[i + 1] >> 7));
  b[BLOCK - 1] = (unsigned char)((b[BLOCK - 1] << 1) ^ (0x87 & (0u - carry)));
}

static void xor_into(unsigned char d[BLOCK], const unsigned char m[BLOCK]) {
  for (int i = 0; i < BLOCK; i++) d[i] ^= m[i];
}

/* Readies the CMAC context for a new message: a restart, unless EVP_MAC_init just keyed it. */
static int cmac_start(ntsd_siv *s) {
  if (s->cmac_fresh) {
    s->cmac_fresh = 0;
    return 1;
  }
  return EVP_MAC_init(s->cmac, NULL, 0, NULL);
}

static int cmac_finish(ntsd_siv *s, unsigned char out[BLOCK]) {
  size_t n = 0;
  return EVP_MAC_final(s->cmac, out, &n, BLOCK) && n == BLOCK;
}

/* out = CMAC(K1, in). */
static int cmac(ntsd_siv *s, const unsigned char *in, size_t len, unsigned char out[BLOCK]) {
  return cmac_start(s) && EVP_MAC_update(s->cmac, in, len) && cmac_finish(s, out);
}

/* Keys the CMAC context with K1 and computes d0 = dbl(CMAC(K1, 0^128)), once per key. */
static int key_cmac(ntsd_siv *s) {
  static const unsigned char zero[BLOCK] = {0};
  if (s->cmac_keyed) return 1;
  if (!EVP_MAC_init(s->cmac, s->key, s->half, NULL)) return 0;
  s->cmac_fresh = 1;
  if (!cmac(s, zero, BLOCK, s->d0)) return 0;
  dbl(s->d0);
  s->cmac_keyed = 1;
  return 1;
}

/* v = S2V(K1, AD, N, P) (RFC 5297 §2.4), or S2V(K1, AD, P) when nonce_len is 0. */
static int s2v(ntsd_siv *s, const unsigned char *nonce, size_t nonce_len, const unsigned char *ad, size_t ad_len,
               const unsigned char *p, size_t p_len, unsigned char v[BLOCK]) {
  unsigned char d[BLOCK], m[BLOCK];
  int ok = 0;
  if (!key_cmac(s)) return 0;
  /* D = dbl(CMAC(0)) ^ CMAC(AD). Short associated data (a cookie's key id) repeats under a long-lived key, so
   * its step is kept; the comparison is constant-time, and in NTS the associated data is public anyway. */
  if (s->ad_len >= 0 && (size_t)s->ad_len == ad_len && CRYPTO_memcmp(s->ad, ad, ad_len) == 0) {
    memcpy(d, s->ad_d, BLOCK);
  } else {
    if (!cmac(s, ad, ad_len, m)) goto done;
    memcpy(d, s->d0, BLOCK);
    xor_into(d, m);
    if (ad_len <= BLOCK) {
      memcpy(s->ad, ad, ad_len);
      memcpy(s->ad_d, d, BLOCK);
      s->ad_len = (int)ad_len;
    }
  }
  if (nonce_len > 0) { /* D = dbl(D) ^ CMAC(N) */
    if (!cmac(s, nonce, nonce_len, m)) goto done;
    dbl(d);
    xor_into(d, m);
  }
  if (!cmac_start(s)) goto done;
  if (p_len >= BLOCK) { /* T = P xorend D */
    memcpy(m, p + p_len - BLOCK, BLOCK);
    xor_into(m, d);
    ok = EVP_MAC_update(s->cmac, p, p_len - BLOCK) && EVP_MAC_update(s->cmac, m, BLOCK);
  } else { /* T = dbl(D) ^ pad(P), pad(P) = P || 1 || 0* */
    dbl(d);
    memset(m, 0, BLOCK);
    if (p_len > 0) memcpy(m, p, p_len);
    m[p_len] = 0x80;
    xor_into(m, d);
    ok = EVP_MAC_update(s->cmac, m, BLOCK);
  }
  ok = ok && cmac_finish(s, v);
done:
  OPENSSL_cleanse(d, sizeof(d));
  OPENSSL_cleanse(m, sizeof(m));
  return ok;
}

/* out = AES-CTR(K2, Q, in), Q = V with bits 31 and 63 cleared (RFC 5297 §2.6). */
static int ctr(ntsd_siv *s, const unsigned char v[BLOCK], const unsigned char *in, size_t len, unsigned char *out) {
  unsigned char q[BLOCK];
  int n = 0;
  memcpy(q, v, BLOCK);
  q[8] &= 0x7f;
  q[12] &= 0x7f;
  int ok = s->ctr_keyed ? EVP_EncryptInit_ex2(s->ctr, NULL, NULL, q, NULL) : EVP_EncryptInit_ex2(s->ctr, NULL, s->key + s->half, q, NULL);
  if (ok) s->ctr_keyed = 1;
  return ok && EVP_EncryptUpdate(s->ctr, out, &n, in, (int)len) && (size_t)n == len;
}

int ntsd_siv_seal(ntsd_siv *s, const unsigned char *nonce, size_t nonce_len, const unsigned char *ad, size_t ad_len,
                  const unsigned char *pt, size_t pt_len, unsigned char *out) {
  if (pt_len > (size_t)INT_MAX - BLOCK || !s2v(s, nonce, nonce_len, ad, ad_len, pt, pt_len, out)) return 0;
  return pt_len == 0 || ctr(s, out, pt, pt_len, out + BLOCK);
}

int ntsd_siv_open(ntsd_siv *s, const unsigned char *nonce, size_t nonce_len, const unsigned char *ad, size_t ad_len,
                  const unsigned char *in, size_t in_len, unsigned char *out) {
  unsigned char v[BLOCK];
  if (in_len < BLOCK || in_len > (size_t)INT_MAX) return 0;
  size_t c_len = in_len - BLOCK;
  if (c_len > 0 && !ctr(s, in, in + BLOCK, c_len, out)) return 0;
  int ok = s2v(s, nonce, nonce_len, ad, ad_len, out, c_len, v) && CRYPTO_memcmp(v, in, BLOCK) == 0;
  OPENSSL_cleanse(v, sizeof(v));
  return ok;
}
#endif
