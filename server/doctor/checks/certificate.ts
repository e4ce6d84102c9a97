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
    const problems = outcomes.filter((o) => o.problem);
    const detail = outcomes.map((o) => o.problem ?? o.fact).join('\n');
    if (problems.length === 0) return { status: 'pass', detail };
    const { hostname, config } = context;
    const fix = [
      `give the relay a certificate for ${hostname} from a public CA (Let's Encrypt, for one), renewed before it expires:`,
      `  tls.certFile: the full chain (leaf first), tls.keyFile: its key; then reload or restart the relay`,
      config.tls.certFile ? `  (now: ${config.tls.certFile})` : '  (now: none configured, so the relay presents a self-signed certificate)',
    ].join('\n');
    return { status: 'fail', detail, fix };
  },
};

async function inspect({ hostname, net, smtpPort, timeoutMs, config }: DoctorContext, ip: string): Promise<{ problem?: string; fact: string }> {
  const where = `${ip}:${smtpPort}`;
  let secure: tls.TLSSocket;
  let probe: SmtpProbe | undefined;
  try {
    const socket = await net.connect(ip, smtpPort);
    if (smtpPort === 465) {
      ({ probe, secure } = await SmtpProbe.openImplicitTls(socket, hostname, net.caList(), timeoutMs));
    } else {
      ({ probe } = await SmtpProbe.open(socket, timeoutMs));
      const ehlo = await probe.command(`EHLO ${hostname}`);
      if (ehlo.code !== 250) return { problem: `${where}: EHLO refused: ${ehlo.code} ${ehlo.text}`, fact: '' };
      if (!/(^| \/ )STARTTLS( |$)/i.test(ehlo.text)) return { problem: `${where} does not offer STARTTLS: mail to the server travels in clear text`, fact: '' };
      secure = await probe.startTls(hostname, net.caList());
    }
  } catch (err) {
    probe?.close();
    return { problem: `${where}: ${(err as Error).message}`, fact: '' };
  }
  try {
    const cert = secure.getPeerX509Certificate();
    if (!cert) return { problem: `${where}: the server sent no certificate`, fact: '' };
    const validTo = new Date(cert.validTo);
    const daysLeft = Math.floor((validTo.getTime() - Date.now()) / DAY_MS);
    const subject = cert.subjectAltName ?? cert.subject.replace(/\n/g, ', ');
    const nameMatches = cert.checkHost(hostname) !== undefined;
    const minDays = config.doctor.certificateMinDays;
    if (!secure.authorized) return { problem: `${where}: the certificate (${subject}, issued by ${cert.issuer.replace(/\n/g, ', ')}) is not trusted: ${String(secure.authorizationError)}`, fact: '' };
    if (!nameMatches) return { problem: `${where}: the certificate is for ${subject}, not for ${hostname}`, fact: '' };
    if (daysLeft < 0) return { problem: `${where}: the certificate expired on ${validTo.toISOString()}`, fact: '' };
    if (daysLeft < minDays) return { problem: `${where}: the certificate expires in ${daysLeft} days (${validTo.toISOString()}), less than ${minDays}: renewal is failing`, fact: '' };
    return { fact: `${where}: ${subject}, ${secure.getProtocol() ?? 'TLS'}, valid for ${daysLeft} more days (until ${validTo.toISOString().slice(0, 10)})` };
  } finally {
    probe?.close();
  }
}
