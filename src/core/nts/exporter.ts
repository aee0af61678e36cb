/**
 * TLS exporter contexts for the NTS keys (RFC 8915 §4.3, §5.1).
 *
 * Both keys come from the TLS 1.3 exporter (RFC 8446 §7.5) with the label
 * "EXPORTER-network-time-security" (see NTS_EXPORTER_LABEL in ids.ts) and a context that starts
 * with the negotiated Next Protocol id. For NTPv4 (§5.1) the context is exactly 5 octets:
 *   C2S: 00 00 | AEAD id (u16 big-endian) | 00
 *   S2C: 00 00 | AEAD id (u16 big-endian) | 01
 * The exported length is the AEAD's key length.
 */
import { writeU16 } from '../bytes.js';
import { AeadId, NextProtocolId } from './ids.js';

/** Last context octet: which direction a key protects (RFC 8915 §5.1). */
export const ExporterDirection = {
  /** Client-to-server key. */
  c2s: 0,
  /** Server-to-client key. */
  s2c: 1,
} as const;
/** 0 (C2S) or 1 (S2C). */
export type ExporterDirection = (typeof ExporterDirection)[keyof typeof ExporterDirection];

/** Length of the NTPv4 exporter context in octets (RFC 8915 §5.1). */
export const NTPV4_EXPORTER_CONTEXT_LENGTH = 5;

/**
 * The shell's binding of the TLS exporter: returns the C2S and S2C keys, each `keyLength` octets,
 * from two `exportKeyingMaterial(keyLength, NTS_EXPORTER_LABEL, context)` calls on the session.
 */
export type ExportKeys = (
  c2sContext: Uint8Array,
  s2cContext: Uint8Array,
  keyLength: number,
) => { readonly c2s: Uint8Array; readonly s2c: Uint8Array };

/**
 * Builds the exporter context for Next Protocol `nextProtocol` (RFC 8915 §4.3, §5.1: u16 protocol
 * id, u16 AEAD id, one direction octet). Only NTPv4 (0) defines this layout; it is used for any id.
 */
export function encodeExporterContext(nextProtocol: number, exporterAeadId: number, direction: ExporterDirection): Uint8Array {
  const out = new Uint8Array(NTPV4_EXPORTER_CONTEXT_LENGTH);
  writeU16(out, 0, nextProtocol);
  writeU16(out, 2, exporterAeadId);
  out[4] = direction;
  return out;
}

/**
 * The AEAD id to write into the exporter context for a session that negotiated `aeadId`.
 *
 * chrony quirk: chrony added AEAD 30 (AEAD_AES_128_GCM_SIV) in 4.4, and its exporter context
 * carried 15 (AEAD_AES_SIV_CMAC_256) instead of 30 — the key length is still that of 30
 * (16 octets), only the two context octets are wrong. chrony 4.4–4.6 always do this. Rather than
 * break deployed pairs, chrony then introduced NTS-KE record type 1024 ("Compliant
 * AES-128-GCM-SIV Exporter Context", IANA-registered, empty body, sent non-critical; in chrony
 * releases after 4.6): a client that can use the RFC context sends it, a server that agrees
 * echoes it, and only then is 30 written into the context. Without that exchange chrony, server
 * and client alike, keeps the legacy 15 (its newer clients also retry with the RFC context after
 * an NTS NAK, for RFC servers that ignore record 1024).
 * We do what chrony's server does (nts_ke_server.c: prepare_response/process_request):
 *  - client sent 1024 and 30 was chosen → echo 1024, RFC context (30);
 *  - 30 chosen without 1024 → legacy context (15 in the id field);
 *  - any other AEAD → the RFC context, and 1024 is neither needed nor echoed.
 * A non-chrony RFC-following client that picks 30 without sending 1024 will therefore fail its
 * NTP exchange; chrony is the only widely deployed 30 implementation, so we follow it.
 */
export function exporterAeadId(aeadId: number, compliantGcmSivExporter: boolean): number {
  if (aeadId === AeadId.AES_128_GCM_SIV && !compliantGcmSivExporter) return AeadId.AES_SIV_CMAC_256;
  return aeadId;
}

/** Both NTPv4 exporter contexts (RFC 8915 §5.1) for `aeadId`, applying the chrony rule of exporterAeadId. */
export function ntpv4ExporterContexts(
  aeadId: number,
  compliantGcmSivExporter: boolean,
): { readonly c2s: Uint8Array; readonly s2c: Uint8Array } {
  const contextAeadId = exporterAeadId(aeadId, compliantGcmSivExporter);
  return {
    c2s: encodeExporterContext(NextProtocolId.ntpv4, contextAeadId, ExporterDirection.c2s),
    s2c: encodeExporterContext(NextProtocolId.ntpv4, contextAeadId, ExporterDirection.s2c),
  };
}
