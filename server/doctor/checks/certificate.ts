/**
 * The certificate senders see: on each of the server's addresses, port 25 with
 * STARTTLS (or TLS from the first byte when the port is 465), a certificate that
 * chains to a trusted root, is valid for the host name and does not expire within
 * `doctor.certificateMinDays`. Senders that enforce MTA-STS refuse anything less.
 */
import tls from 'node:tls';
import { SmtpProbe } from '../smtp-probe';
import type { Check, DoctorContext } from '../types';

const DAY_MS = 24 * 3600_000;

export const certificateCheck: Check = {
  id: 'certificate',
  title: 'TLS certificate valid for the host name and not near expiry',
  async run(context) {
    const outcomes = await Promise.all(context.ips.map((ip) => inspect(context, ip)));
    const detail = outcomes.map((o) => o.line).join('\n');
    if (outcomes.every((o) => o.kind === 'ok')) return { status: 'pass', detail };
    const { hostname, config, smtpPort } = context;
    const fixes: string[] = [];
    if (outcomes.some((o) => o.kind === 'unreachable')) {
      fixes.push(`make sure the relay listens on port ${smtpPort} of every address above (a listener with address 0.0.0.0 or ::) and that the firewall and the cloud's security group let TCP ${smtpPort} in`);
    }
    if (outcomes.some((o) => o.kind === 'certificate')) {
      fixes.push(
        `give the relay a certificate for ${hostname} from a public CA (Let's Encrypt, for one), renewed before it expires:`,
        '  tls.certFile: the full chain (leaf first), tls.keyFile: its key; then reload or restart the relay',
        config.tls.certFile ? `  (now: ${config.tls.certFile})` : '  (now: none configured, so the relay presents a self-signed certificate)',
      );
    }
    return { status: 'fail', detail, fix: fixes.join('\n') };
  },
};

type Outcome = { kind: 'ok' | 'unreachable' | 'certificate'; line: string };

async function inspect(context: DoctorContext, ip: string): Promise<Outcome> {
  const { hostname, net, smtpPort, timeoutMs } = context;
  const where = `${ip}:${smtpPort}`;
  let probe: SmtpProbe | undefined;
  try {
    let secure: tls.TLSSocket;
    try {
      const socket = await net.connect(ip, smtpPort);
      if (smtpPort === 465) {
        ({ probe, secure } = await SmtpProbe.openImplicitTls(socket, hostname, net.caList(), timeoutMs));
      } else {
        ({ probe } = await SmtpProbe.open(socket, timeoutMs));
        const ehlo = await probe.command(`EHLO ${hostname}`);
        if (ehlo.code !== 250) return { kind: 'unreachable', line: `${where}: EHLO refused: ${ehlo.code} ${ehlo.text}` };
        if (!/(^| \/ )STARTTLS( |$)/i.test(ehlo.text)) return { kind: 'certificate', line: `${where} does not offer STARTTLS: mail to the server travels in clear text` };
        secure = await probe.startTls(hostname, net.caList());
      }
    } catch (err) {
      return { kind: 'unreachable', line: `${where}: ${(err as Error).message}` };
    }
    return judge(context, where, secure);
  } finally {
    probe?.close();
  }
}

function judge({ hostname, config }: DoctorContext, where: string, secure: tls.TLSSocket): Outcome {
  const cert = secure.getPeerX509Certificate();
  if (!cert) return { kind: 'certificate', line: `${where}: the server sent no certificate` };
  const validTo = new Date(cert.validTo);
  const daysLeft = Math.floor((validTo.getTime() - Date.now()) / DAY_MS);
  const subject = cert.subjectAltName ?? cert.subject.replace(/\n/g, ', ');
  const minDays = config.doctor.certificateMinDays;
  const problem = (line: string): Outcome => ({ kind: 'certificate', line: `${where}: ${line}` });
  if (!secure.authorized) return problem(`the certificate (${subject}, issued by ${cert.issuer.replace(/\n/g, ', ')}) is not trusted: ${String(secure.authorizationError)}`);
  if (cert.checkHost(hostname) === undefined) return problem(`the certificate is for ${subject}, not for ${hostname}`);
  if (daysLeft < 0) return problem(`the certificate expired on ${validTo.toISOString()}`);
  if (daysLeft < minDays) return problem(`the certificate expires in ${daysLeft} days (${validTo.toISOString()}), less than ${minDays}: renewal is failing`);
  return { kind: 'ok', line: `${where}: ${subject}, ${secure.getProtocol() ?? 'TLS'}, valid for ${daysLeft} more days (until ${validTo.toISOString().slice(0, 10)})` };
}
