/**
 * The open-relay self-test: on each of the server's public addresses, a session
 * without AUTH tries to send from an outside sender to an outside recipient, in
 * plain text and again after STARTTLS when the server offers it (a stranger can
 * do both). The server must refuse at MAIL or RCPT. Nothing is ever sent: the test stops before
 * DATA. A session that comes from a network in relay.networks proves nothing (the
 * server trusts it by design), so that case is reported as "cannot tell".
 */
import { NetworkList } from '../../config/cidr';
import { SmtpProbe } from '../smtp-probe';
import type { Check, CheckResult, DoctorContext } from '../types';

const OUTSIDE_SENDER = 'ownrelay-doctor@example.com';
const OUTSIDE_RECIPIENT = 'ownrelay-doctor@example.net';

type Outcome = { status: CheckResult['status']; line: string; kind?: 'unreachable' };

export const openRelayCheck: Check = {
  id: 'open-relay',
  title: 'not an open relay',
  async run(context) {
    const attempts = await Promise.all(
      context.ips.map(async (ip) => {
        const plain = await tryRelay(context, ip, false);
        // over TLS only when the plain session reached the server
        return plain?.kind === 'unreachable' ? [plain] : [plain, await tryRelay(context, ip, true)];
      }),
    );
    const outcomes = attempts.flat().filter((o): o is Outcome => o !== undefined);
    const detail = outcomes.map((o) => o.line).join('\n');
    if (outcomes.some((o) => o.kind === 'unreachable')) {
      return { status: 'fail', detail, fix: `make sure the relay listens on port ${context.smtpPort} of every address above and that the firewall lets TCP ${context.smtpPort} in; then run the doctor again` };
    }
    if (outcomes.some((o) => o.status === 'fail')) {
      return {
        status: 'fail',
        detail,
        fix: 'remove networks you do not control from relay.networks, keep AUTH required on submission listeners, and reload; spammers find an open relay within hours and every blocklist lists it',
      };
    }
    if (outcomes.some((o) => o.status === 'warn')) return { status: 'warn', detail, fix: 'run `ownrelay doctor` from a host outside relay.networks to test the server as a stranger sees it' };
    return { status: 'pass', detail };
  },
};

/** undefined: `overTls` and the server offers no STARTTLS (the plain attempt covers it) */
async function tryRelay({ hostname, net, smtpPort, timeoutMs, config }: DoctorContext, ip: string, overTls: boolean): Promise<Outcome | undefined> {
  const where = `${ip}:${smtpPort}${overTls ? ' after STARTTLS' : ''}`;
  let probe: SmtpProbe | undefined;
  try {
    const socket = await net.connect(ip, smtpPort);
    const from = socket.localAddress ?? '';
    const trusted = from !== '' && new NetworkList(config.relay.networks).contains(from);
    ({ probe } = await SmtpProbe.open(socket, timeoutMs));
    let ehlo = await probe.command('EHLO ownrelay-doctor.example.com');
    if (ehlo.code !== 250) return refusedOrNot('EHLO', ehlo.code, ehlo.text, where);
    if (overTls) {
      if (!/(^| \/ )STARTTLS( |$)/i.test(ehlo.text)) return undefined;
      await probe.startTls(hostname, net.caList());
      ehlo = await probe.command('EHLO ownrelay-doctor.example.com');
      if (ehlo.code !== 250) return refusedOrNot('EHLO', ehlo.code, ehlo.text, where);
    }
    const mail = await probe.command(`MAIL FROM:<${OUTSIDE_SENDER}>`);
    if (mail.code !== 250) return refusedOrNot('MAIL FROM', mail.code, mail.text, where);
    const rcpt = await probe.command(`RCPT TO:<${OUTSIDE_RECIPIENT}>`);
    await probe.command('RSET').catch(() => undefined);
    if (rcpt.code >= 300) return refusedOrNot('RCPT TO', rcpt.code, rcpt.text, where);
    if (trusted) return { status: 'warn', line: `${where}: relaying accepted, but this test comes from ${from}, which relay.networks trusts: cannot tell what a stranger gets` };
    return { status: 'fail', line: `${where}: OPEN RELAY: accepted mail from <${OUTSIDE_SENDER}> to <${OUTSIDE_RECIPIENT}> without AUTH (from ${from}): ${rcpt.code} ${rcpt.text}` };
  } catch (err) {
    return { status: 'fail', kind: 'unreachable', line: `${where}: cannot run the test: ${(err as Error).message}` };
  } finally {
    probe?.close();
  }
}

function refusedOrNot(step: string, code: number, text: string, where: string): Outcome {
  if (code >= 500) return { status: 'pass', line: `${where}: relaying refused at ${step}: ${code} ${text}` };
  return { status: 'warn', line: `${where}: ${step} answered ${code} ${text}: a temporary refusal, cannot tell whether the server would relay` };
}
