/*
 * AES-SIV (RFC 5297) composed from OpenSSL's CMAC (EVP_MAC) and AES-CTR (EVP_CIPHER): the interface between
 * aead_siv.c, which does it, and aead.c, which exposes it to JavaScript. See aead_siv.c for why.
 */
#ifndef NTSD_AEAD_SIV_H
#define NTSD_AEAD_SIV_H

#include <stddef.h>

/* One SIV key with its keyed OpenSSL contexts (opaque). */
typedef struct ntsd_siv ntsd_siv;

/* 1 when OpenSSL provides CMAC and the AES-CTR cipher a SIV key of key_len octets (32, 48, 64) needs. */
int ntsd_siv_available(int key_len);
/* A key slot for SIV keys of key_len octets, keyed with `key`; NULL on a bad length or an OpenSSL failure. */
ntsd_siv *ntsd_siv_new(int key_len, const unsigned char *key);
/* Replaces the key (key_len octets); the contexts are re-keyed lazily, at the next operation that needs them. */
void ntsd_siv_set_key(ntsd_siv *s, const unsigned char *key);
/* Cleanses the key and the key-derived state and frees the contexts; NULL is allowed. */
void ntsd_siv_free(ntsd_siv *s);
/* Seal: out[0, 16) = V, out[16, 16 + pt_len) = C. A nonce_len of 0 means no nonce component. 1 on success. */
int ntsd_siv_seal(ntsd_siv *s, const unsigned char *nonce, size_t nonce_len, const unsigned char *ad, size_t ad_len,
                  const unsigned char *pt, size_t pt_len, unsigned char *out);
/* Open: in = V || C with in_len >= 16; writes in_len - 16 octets of plaintext at out. 1 when V verifies; on 0
 * the caller must discard (and should cleanse) out. */
int ntsd_siv_open(ntsd_siv *s, const unsigned char *nonce, size_t nonce_len, const unsigned char *ad, size_t ad_len,
                  const unsigned char *in, size_t in_len, unsigned char *out);

#endif
