/**
 * Outbound port 25: a TCP connection from this host to `doctor.outboundProbe`
 * (a mail server outside). Cloud providers block outbound port 25 on new
 * accounts; AWS silently drops it on EC2 until a request is granted, which shows
 * up here as a timeout. With a smarthost configured the relay does not need port
 * 25, so a block is then only a warning.
 */
import { ConnectError } from '../net-client';
import type { Check } from '../types';

/** the same request form the infra program's next steps point to */
export const AWS_PORT25_FORM = 'https://console.aws.amazon.com/support/contacts#/rdns-limits';

export const outboundCheck: Check = {
  id: 'outbound-25',
  title: 'outbound port 25 reachable',
  async run({ config, net }) {
    const probe = config.doctor.outboundProbe;
    const colon = probe.lastIndexOf(':');
    const host = probe.slice(0, colon);
    const port = Number(probe.slice(colon + 1));
    const smarthost = config.delivery.smarthost;
    try {
      const socket = await net.connect(host, port);
      const from = `${socket.localAddress ?? '?'}`;
      socket.destroy();
      return { status: 'pass', detail: `connected to ${probe} (from ${from})` };
    } catch (err) {
      const message = (err as Error).message;
      const reason = err instanceof ConnectError ? err.reason : 'other';
      const explanation =
        reason === 'timeout'
          ? [
              `outbound connections to port 25 time out: ${message}`,
              'This is what a provider-level block looks like. AWS blocks outbound port 25 on every EC2 instance until you ask for it to be lifted.',
            ].join('\n')
          : `cannot connect to ${probe}: ${message}`;
      const fix =
        reason === 'timeout'
          ? [
              `on AWS: open the "Request to remove email sending limitations" form (${AWS_PORT25_FORM}) in the server's region and send the use case, the Elastic IP and its reverse DNS (the infra program's next steps print the text); the answer usually takes a day or two.`,
              'until then, or on a provider that never lifts the block, send through a smarthost on port 587: delivery.smarthost { host, port: 587, tls: required, auth } in the relay config.',
              'elsewhere: allow outbound TCP 25 in the host firewall and the provider\'s security groups.',
            ].join('\n')
          : `check doctor.outboundProbe (${probe}) is a mail server that accepts connections, and that the host firewall allows outbound TCP ${port}`;
      if (smarthost) return { status: 'warn', detail: `${explanation}\ndelivery goes through the smarthost ${smarthost.host}:${smarthost.port}, so mail still leaves`, fix };
      return { status: 'fail', detail: explanation, fix };
    }
  },
};
