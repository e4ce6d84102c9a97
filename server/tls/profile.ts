/**
 * The TLS settings every listener (SMTP and HTTPS) uses: Mozilla's "intermediate"
 * server-side TLS profile, guideline 6.0 (https://ssl-config.mozilla.org/guidelines/6.0.json):
 * TLS 1.2 and 1.3 only, ECDHE with AEAD ciphers only (no RSA key exchange, no DHE,
 * no CBC, RC4, 3DES, NULL, EXPORT or anonymous suites), the client's cipher order
 * (`server_preferred_order: false`: every listed suite is strong, and clients know
 * best whether they have AES hardware), and the key exchange groups
 * X25519MLKEM768, X25519, prime256v1, secp384r1.
 *
 * Contract: `tlsProfileOptions()` returns options for `tls.createSecureContext`
 * (and so for smtp-server, https.createServer and `setSecureContext`); a group the
 * linked OpenSSL does not know (X25519MLKEM768 needs OpenSSL 3.5) is left out
 * rather than failing the start, so a newer Node.js gets it without a change here.
 */
import tls from 'node:tls';

export const MOZILLA_INTERMEDIATE = {
  guideline: '6.0',
  /** TLS 1.2 suites, in Mozilla's order (OpenSSL names) */
  tls12Ciphers: [
    'ECDHE-ECDSA-AES128-GCM-SHA256',
    'ECDHE-RSA-AES128-GCM-SHA256',
    'ECDHE-ECDSA-AES256-GCM-SHA384',
    'ECDHE-RSA-AES256-GCM-SHA384',
    'ECDHE-ECDSA-CHACHA20-POLY1305',
    'ECDHE-RSA-CHACHA20-POLY1305',
  ],
  /** TLS 1.3 suites */
  tls13Ciphersuites: ['TLS_AES_128_GCM_SHA256', 'TLS_AES_256_GCM_SHA384', 'TLS_CHACHA20_POLY1305_SHA256'],
  groups: ['X25519MLKEM768', 'X25519', 'prime256v1', 'secp384r1'],
  serverPreferredOrder: false,
} as const;

export type TlsMinVersion = 'TLSv1.2' | 'TLSv1.3';

export interface TlsProfileOptions {
  minVersion: TlsMinVersion;
  maxVersion: 'TLSv1.3';
  /** TLS 1.3 suites first, then the TLS 1.2 ones; Node.js splits them by their TLS_ prefix */
  ciphers: string;
  ecdhCurve: string;
  honorCipherOrder: boolean;
}

let supportedGroups: string[] | undefined;

/** The profile's groups that this process's OpenSSL supports, in the profile's order. */
export function supportedProfileGroups(): string[] {
  supportedGroups ??= MOZILLA_INTERMEDIATE.groups.filter((group) => {
    try {
      tls.createSecureContext({ ecdhCurve: group });
      return true;
    } catch {
      return false;
    }
  });
  return supportedGroups;
}

export function tlsProfileOptions(minVersion: TlsMinVersion = 'TLSv1.2'): TlsProfileOptions {
  return {
    minVersion,
    maxVersion: 'TLSv1.3',
    ciphers: [...MOZILLA_INTERMEDIATE.tls13Ciphersuites, ...MOZILLA_INTERMEDIATE.tls12Ciphers].join(':'),
    ecdhCurve: supportedProfileGroups().join(':'),
    honorCipherOrder: MOZILLA_INTERMEDIATE.serverPreferredOrder,
  };
}
