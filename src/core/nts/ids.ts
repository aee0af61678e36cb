/**
 * IANA numbers used by NTS (RFC 8915 §7) and NTP (RFC 5905, RFC 7822).
 * Registries stay open: code that meets an unknown number keeps it as a plain number.
 */

/** NTS-KE record types (RFC 8915 §4.1, IANA §7.6). */
export const KeRecordType = {
  /** §4.1.1 End of Message: critical, empty body, last record. */
  endOfMessage: 0,
  /** §4.1.2 NTS Next Protocol Negotiation. */
  nextProtocol: 1,
  /** §4.1.3 Error. */
  error: 2,
  /** §4.1.4 Warning. */
  warning: 3,
  /** §4.1.5 AEAD Algorithm Negotiation. */
  aeadAlgorithm: 4,
  /** §4.1.6 New Cookie for NTPv4. */
  newCookie: 5,
  /** §4.1.7 NTPv4 Server Negotiation. */
  ntpv4Server: 6,
  /** §4.1.8 NTPv4 Port Negotiation. */
  ntpv4Port: 7,
  /** NTS pools (draft-ietf-ntp-nts-keyexchange-pool, IANA early allocation): Keep Alive, non-critical, empty body. */
  keepAlive: 8,
  /** NTS pools: Supported Next Protocol List, critical; empty in a request, u16 protocol ids in a response. */
  supportedNextProtocolList: 9,
  /** NTS pools: Supported Algorithm List, critical; empty in a request, (u16 AEAD id, u16 key length) pairs in a response. */
  supportedAlgorithmList: 10,
  /** NTS pools: Fixed Key Request, critical; body C2S key ‖ S2C key, each of the negotiated AEAD's key length. */
  fixedKeyRequest: 12,
  /** NTS pools: NTP Server Deny, non-critical; a UTF-8 server name the client will not use (may repeat). */
  ntpServerDeny: 13,
  /** NTS pools: Authentication token, non-critical; the UTF-8 token the pool issued to a source's operator. */
  authenticationToken: 14,
  /** chrony 4.4+: "compliant AES-128-GCM-SIV exporter context" flag (not IANA-registered). */
  chronyCompliantGcmSivExporter: 1024,
} as const;
export type KnownKeRecordType = (typeof KeRecordType)[keyof typeof KeRecordType];

/** NTS-KE error codes (RFC 8915 §4.1.3, IANA §7.8). */
export const KeErrorCode = {
  unrecognizedCriticalRecord: 0,
  badRequest: 1,
  internalServerError: 2,
} as const;
export type KnownKeErrorCode = (typeof KeErrorCode)[keyof typeof KeErrorCode];

/**
 * Error codes of an NTS pool KE front end (private range of RFC 8915 §7.8, as nts-pool-ke uses them):
 * the front end could not serve the client through any source.
 */
export const PoolKeErrorCode = {
  /** No source is available that the client did not deny. */
  noSuchServer: 0xf000,
  /** The chosen source could not be reached (TCP or TLS failed). */
  couldNotConnect: 0xf001,
  /** The chosen source did not answer the capability query usably. */
  couldNotGetCapabilities: 0xf002,
  /** The chosen source did not answer the fixed key request with cookies. */
  couldNotGetCookies: 0xf003,
} as const;
/** One of PoolKeErrorCode. */
export type KnownPoolKeErrorCode = (typeof PoolKeErrorCode)[keyof typeof PoolKeErrorCode];

/** NTS Next Protocol IDs (RFC 8915 §7.7). */
export const NextProtocolId = {
  ntpv4: 0,
} as const;

/** AEAD algorithm identifiers (IANA "AEAD Algorithms" registry, RFC 5116 §6, RFC 5297 §6, RFC 8452 §9). */
export const AeadId = {
  AES_SIV_CMAC_256: 15,
  AES_SIV_CMAC_384: 16,
  AES_SIV_CMAC_512: 17,
  AES_128_GCM_SIV: 30,
} as const;
export type KnownAeadId = (typeof AeadId)[keyof typeof AeadId];

/** NTP extension field types used by NTS (RFC 8915 §5.2–§5.6, IANA §7.5). */
export const NtsExtensionFieldType = {
  uniqueIdentifier: 0x0104,
  ntsCookie: 0x0204,
  ntsCookiePlaceholder: 0x0304,
  ntsAuthenticatorAndEncrypted: 0x0404,
} as const;

/** Kiss-o'-Death code "NTSN" (RFC 8915 §5.7, IANA §7.4) as a big-endian u32. */
export const KISS_NTSN = 0x4e54534e;
/** Kiss-o'-Death code "RATE" (RFC 5905 §7.4). */
export const KISS_RATE = 0x52415445;

/** TLS exporter label for NTS keys (RFC 8915 §4.3, §7.3). */
export const NTS_EXPORTER_LABEL = 'EXPORTER-network-time-security';
/** ALPN protocol id for NTS-KE (RFC 8915 §4, §7.2). */
export const NTSKE_ALPN = 'ntske/1';
/** IANA TCP port for NTS-KE (RFC 8915 §7.1). */
export const NTSKE_PORT = 4460;
/** Default NTP UDP port (RFC 5905 §7.2); a Port Negotiation record is needed for any other (RFC 8915 §4.1.8). */
export const NTP_PORT = 123;
