/**
 * The doctor's report as text: a checklist with one line per check, the detail
 * indented under it, and the fix under every fail or warning; a summary last.
 */
import type { DoctorReport } from './runner';
import type { CheckStatus } from './types';

const MARK: Record<CheckStatus, string> = { pass: 'PASS', warn: 'WARN', fail: 'FAIL' };

export function renderReport(report: DoctorReport): string {
  const lines = [`ownrelay doctor ${report.domain}: server ${report.hostname} (${report.ips.join(', ')}), resolver ${report.resolvers}`, ''];
  for (const result of report.results) {
    lines.push(`[${MARK[result.status]}] ${result.title} (${result.id})`);
    for (const line of result.detail.split('\n')) lines.push(`       ${line}`);
    if (result.fix && result.status !== 'pass') {
      const [first, ...rest] = result.fix.split('\n');
      lines.push(`       fix: ${first}`);
      for (const line of rest) lines.push(`            ${line}`);
    }
  }
  const count = (status: CheckStatus) => report.results.filter((r) => r.status === status).length;
  lines.push('');
  lines.push(
    `${report.results.length} checks: ${count('pass')} passed, ${count('warn')} warning${count('warn') === 1 ? '' : 's'}, ${count('fail')} failed${report.skipped.length ? `; skipped: ${report.skipped.join(', ')}` : ''}`,
  );
  lines.push(report.ok ? 'ready to send' : 'NOT ready to send: fix the failed checks above');
  return `${lines.join('\n')}\n`;
}
