/**
 * Human output of the `ownrelay` command: aligned columns (like postqueue -p
 * and qshape), ages and sizes people read at a glance. `--json` bypasses all of it.
 */
import type { QueueItem, QueueDetail, QueueSummary } from '../admin/queue-view';
import type { RelayStatus } from '../admin/admin-api';
import type { ActionResult } from '../admin/queue-control';

/** Left-aligned columns; `right` lists the columns aligned to the right (numbers). */
export function table(header: string[], rows: string[][], right: readonly number[] = []): string {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: string[]) =>
    cells
      .map((cell, i) => (right.includes(i) ? cell.padStart(widths[i]!) : i === cells.length - 1 ? cell : cell.padEnd(widths[i]!)))
      .join('  ')
      .trimEnd();
  return [line(header), ...rows.map(line)].join('\n') + '\n';
}

export function age(seconds: number): string {
  if (seconds < 60) return `${seconds}s`;
  if (seconds < 3600) return `${Math.floor(seconds / 60)}m`;
  if (seconds < 86_400) return `${Math.floor(seconds / 3600)}h${String(Math.floor((seconds % 3600) / 60)).padStart(2, '0')}m`;
  return `${Math.floor(seconds / 86_400)}d${String(Math.floor((seconds % 86_400) / 3600)).padStart(2, '0')}h`;
}

export function bytes(n: number): string {
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KiB`;
  if (n < 1024 * 1024 * 1024) return `${(n / 1024 / 1024).toFixed(1)} MiB`;
  return `${(n / 1024 / 1024 / 1024).toFixed(1)} GiB`;
}

/** "12.3 GiB free (new mail refused below 100.0 MiB)", flagged when new mail is being refused. */
function spoolSpace(spool: RelayStatus['spool']): string {
  if (spool.freeBytes === undefined) return 'free space unknown';
  const floor = spool.minFreeBytes > 0 ? ` (new mail refused below ${bytes(spool.minFreeBytes)})` : '';
  return `${bytes(spool.freeBytes)} free${floor}${spool.freeBytes < spool.minFreeBytes ? '  <-- full: new mail gets 452' : ''}`;
}

/** "1h", "30m", "2d", "90s" or plain seconds -> seconds. */
export function parseAge(text: string): number {
  const match = /^(\d+)\s*([smhd]?)$/.exec(text.trim());
  if (!match) throw new Error(`${JSON.stringify(text)} is not an age; use e.g. 90s, 30m, 4h or 2d`);
  return Number(match[1]) * { '': 1, s: 1, m: 60, h: 3600, d: 86_400 }[match[2] as '' | 's' | 'm' | 'h' | 'd'];
}

/** The queue as `queue list` prints it; `filtered` when the command narrowed it down (an empty answer then says so). */
export function formatQueueList(items: QueueItem[], filtered = false): string {
  if (items.length === 0) return filtered ? 'No queued message matches the filter\n' : 'Mail queue is empty\n';
  const rows: string[][] = [];
  for (const item of items) {
    const next = item.nextAttempt ? ` next ${item.nextAttempt.slice(11, 19)}Z` : '';
    rows.push([item.id, item.state, bytes(item.size), age(item.ageSeconds), String(item.attempts), `<${item.from}>${next}`]);
    if (item.error) rows.push(['', '', '', '', '', `  ${item.error}`]);
    for (const r of item.recipients) {
      rows.push(['', '', '', '', '', `  ${r.status.padEnd(9)} <${r.address}>`]);
      if (r.reply && r.status !== 'delivered') rows.push(['', '', '', '', '', `            (${r.reply}${r.remoteHost ? ` from ${r.remoteHost}` : ''})`]);
    }
  }
  const total = items.reduce((sum, i) => sum + i.size, 0);
  return table(['QUEUE ID', 'STATE', 'SIZE', 'AGE', 'TRIES', 'SENDER / RECIPIENTS'], rows, [2, 3, 4]) + `-- ${bytes(total)} in ${items.length} message${items.length === 1 ? '' : 's'}\n`;
}

/** A recipient's RFC 3461 parameters as the client gave them, e.g. " NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;a@b". */
function dsnParameters(r: QueueDetail['recipients'][number]): string {
  const notify = r.notify ? ` NOTIFY=${r.notify.length === 0 ? 'NEVER' : r.notify.join(',')}` : '';
  return notify + (r.orcpt !== undefined ? ` ORCPT=${r.orcpt}` : '');
}

export function formatQueueDetail(d: QueueDetail): string {
  const lines = [
    `Queue ID:    ${d.id}`,
    `State:       ${d.state}${d.nextAttempt ? ` (next attempt ${d.nextAttempt})` : ''}`,
    `Received:    ${d.receivedAt} (${age(d.ageSeconds)} ago)${d.client ? ` from ${d.client.address} [${d.client.helo}] on ${d.client.listener}${d.client.user ? ` as ${d.client.user}` : ''}` : ''}`,
    `Size:        ${bytes(d.size)}`,
    `Attempts:    ${d.attempts}`,
    `Sender:      <${d.from}>`,
    ...(d.dsn ? [`DSN:         ${[d.dsn.ret && `RET=${d.dsn.ret}`, d.dsn.envid !== undefined && `ENVID=${d.dsn.envid}`].filter(Boolean).join(' ')}`] : []),
    'Recipients:',
    ...d.recipients.map((r) => `  ${r.status.padEnd(9)} <${r.address}>${dsnParameters(r)}${r.reply ? `\n            last reply: ${r.reply}${r.remoteHost ? ` (from ${r.remoteHost})` : ''}` : ''}`),
  ];
  if (d.error) lines.push(`Error:       ${d.error}`);
  lines.push('', 'Headers:', ...d.headers.split(/\r?\n/).map((l) => `  ${l}`));
  return lines.join('\n') + '\n';
}

export function formatSummary(summary: QueueSummary): string {
  const header = ['', 'T', ...summary.buckets];
  const rows = summary.rows.map((row) => [row.domain, String(row.total), ...row.counts.map(String)]);
  return table(header, rows, header.map((_, i) => i).slice(1));
}

export function formatActions(action: string, results: ActionResult[]): string {
  return results.map((r) => (r.ok ? `${r.id}: ${action === 'delete' ? 'deleted' : `${r.state}`}` : `${r.id}: not changed: ${r.error}`)).join('\n') + '\n';
}

export function formatStatus(s: RelayStatus): string {
  const counts = Object.entries(s.queue.counts).map(([state, n]) => `${state} ${n}`).join(', ');
  const cert = s.certificate.error
    ? `${s.certificate.file}: ${s.certificate.error}`
    : `${s.certificate.subject}, expires ${s.certificate.validTo} (in ${s.certificate.daysLeft} days)${s.certificate.daysLeft < 14 ? '  <-- renew soon' : ''}\n             ${s.certificate.file}`;
  const lines = [
    `ownrelay ${s.version} on ${s.hostname}, pid ${s.pid}, up ${age(s.uptimeSeconds)} (since ${s.startedAt})`,
    `Config:      ${s.configFile ?? '(embedded default)'}`,
    `Listeners:   ${s.listeners.map((l) => `${l.role} ${l.address}:${l.port} (${l.tls})`).join('\n             ')}`,
    `Metrics:     ${s.metrics ?? 'off'}`,
    `Queue:       ${counts}; ${s.queue.delivering} in delivery now${s.queue.waiting > 0 ? `, ${s.queue.waiting} waiting for a busy destination` : ''}`,
    `Oldest:      ${s.queue.oldestAgeSeconds > 0 ? age(s.queue.oldestAgeSeconds) : '-'}`,
    `Spool:       ${s.spool.path}, ${spoolSpace(s.spool)}`,
    `Certificate: ${cert}`,
  ];
  for (const [i, d] of s.suspendedDestinations.entries()) {
    lines.push(`${i === 0 ? 'Suspended:  ' : '            '} ${d.destination} until ${d.until} (nothing answered: ${d.reason})`);
  }
  if (s.lastErrors.length === 0) lines.push('Last delivery errors: none');
  else {
    lines.push('Last delivery errors by domain:');
    lines.push(
      table(
        ['  DOMAIN', 'WHEN', 'COUNT', 'LAST ERROR'],
        s.lastErrors.map((e) => [`  ${e.domain}`, e.at.slice(0, 19) + 'Z', String(e.count), `${e.outcome}: ${e.reply}${e.remoteHost ? ` (${e.remoteHost})` : ''}`]),
        [2],
      ).trimEnd(),
    );
  }
  return lines.join('\n') + '\n';
}
