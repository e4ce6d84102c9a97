/**
 * fail2ban for the relay host: a filter that matches the relay's JSON log line
 * for a failed or blocked SMTP AUTH (`"event":"auth"`, the client IP, and
 * `"result":"failed"` or `"blocked"`) and a jail that reads the relay's journal
 * and bans an IP on the submission ports with nftables. Pure text renderers;
 * the user-data installs both files.
 */
import { RELAY_UNIT_NAME } from './systemd-unit';

export const FAIL2BAN_FILTER_PATH = '/etc/fail2ban/filter.d/ownrelay-auth.conf';
export const FAIL2BAN_JAIL_PATH = '/etc/fail2ban/jail.d/ownrelay.conf';

export function renderFail2banFilter(): string {
  return [
    '# ownrelay: failed SMTP AUTH, from the relay\'s JSON log lines. Rendered by infra.',
    '[Definition]',
    // pino writes keys in this order: ... "event", "listener", "client", "user", "result"
    '# IPv4 clients of a dual-stack listener appear as ::ffff:a.b.c.d',
    'failregex = ^.*"event":"auth","listener":"[^"]*","client":"(?:::ffff:)?<HOST>","user":".*","result":"(?:failed|blocked)"',
    'ignoreregex =',
    '',
  ].join('\n');
}

export interface JailSettings {
  /** failures within findtime before a ban */
  maxRetry?: number;
  findTime?: string;
  banTime?: string;
  /** never banned (e.g. the admin networks) */
  ignoreIps?: string[];
}

export function renderFail2banJail(settings: JailSettings = {}): string {
  return [
    '# ownrelay: ban IPs that keep failing SMTP AUTH. Rendered by infra.',
    '[ownrelay-auth]',
    'enabled = true',
    'filter = ownrelay-auth',
    'backend = systemd',
    `journalmatch = _SYSTEMD_UNIT=${RELAY_UNIT_NAME}`,
    'port = submission,submissions',
    'banaction = nftables-multiport',
    `maxretry = ${settings.maxRetry ?? 10}`,
    `findtime = ${settings.findTime ?? '15m'}`,
    `bantime = ${settings.banTime ?? '1h'}`,
    `ignoreip = ${['127.0.0.1/8', '::1', ...(settings.ignoreIps ?? [])].join(' ')}`,
    '',
  ].join('\n');
}
