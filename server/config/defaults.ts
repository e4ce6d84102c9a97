/**
 * The embedded default config that `npm start` runs when no config file is given:
 * loopback ports only, no root, no cloud, a local Maildir for `localhost`.
 * It passes through the same schema as a file does.
 */
export const DEFAULT_CONFIG_YAML = `
hostname: localhost
listeners:
  - { role: mx, address: 127.0.0.1, port: 2525 }
  - { role: submission, address: 127.0.0.1, port: 2587, tls: starttls }
domains:
  - name: localhost
    delivery: maildir
relay:
  networks: [127.0.0.0/8, ::1/128]
paths:
  spool: ./var/spool
  mail: ./var/mail
  state: ./var/state
`;
