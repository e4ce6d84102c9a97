/**
 * The result types of SMTP TLS Reporting (RFC 8460 4.3) and how the errors of
 * Node's TLS stack map onto them.
 *
 * Contract: `certificateResultType` answers for a Node/OpenSSL verification code
 * (e.g. ERR_TLS_CERT_ALTNAME_INVALID, CERT_HAS_EXPIRED) which certificate
 * failure it is, and undefined for codes that are not about the certificate.
 */

/** RFC 8460 4.3.1 (negotiation) and 4.3.2 (policy) failure result types used by MTA-STS */
export type TlsResultType =
  | 'starttls-not-supported'
  | 'certificate-host-mismatch'
  | 'certificate-expired'
  | 'certificate-not-trusted'
  | 'validation-failure'
  | 'sts-policy-fetch-error'
  | 'sts-policy-invalid'
  | 'sts-webpki-invalid';

const EXPIRED = new Set(['CERT_HAS_EXPIRED', 'CERT_NOT_YET_VALID', 'ERROR_IN_CERT_NOT_BEFORE_FIELD', 'ERROR_IN_CERT_NOT_AFTER_FIELD']);

const NOT_TRUSTED = new Set([
  'DEPTH_ZERO_SELF_SIGNED_CERT',
  'SELF_SIGNED_CERT_IN_CHAIN',
  'UNABLE_TO_GET_ISSUER_CERT',
  'UNABLE_TO_GET_ISSUER_CERT_LOCALLY',
  'UNABLE_TO_VERIFY_LEAF_SIGNATURE',
  'UNABLE_TO_DECRYPT_CERT_SIGNATURE',
  'UNABLE_TO_DECODE_ISSUER_PUBLIC_KEY',
  'CERT_SIGNATURE_FAILURE',
  'CERT_UNTRUSTED',
  'CERT_REJECTED',
  'CERT_REVOKED',
  'INVALID_CA',
  'PATH_LENGTH_EXCEEDED',
  'INVALID_PURPOSE',
  'CERT_CHAIN_TOO_LONG',
]);

const HOST_MISMATCH = new Set(['ERR_TLS_CERT_ALTNAME_INVALID', 'HOSTNAME_MISMATCH']);

export function certificateResultType(code: string | undefined): TlsResultType | undefined {
  if (code === undefined) return undefined;
  if (HOST_MISMATCH.has(code)) return 'certificate-host-mismatch';
  if (EXPIRED.has(code)) return 'certificate-expired';
  if (NOT_TRUSTED.has(code)) return 'certificate-not-trusted';
  return undefined;
}
