/**
 * JSON logs, one object per line on stdout (journald keeps them on a server).
 * Message state lines carry `event` (accepted, delivered, deferred, bounced, ...)
 * and the queue id as `queueId`, so `journalctl -u ownrelay -o cat | jq` can follow one message.
 */
import pino from 'pino';

export type Logger = pino.Logger;

export function createLogger(level: string, destination?: pino.DestinationStream): Logger {
  return pino(
    {
      level,
      base: { service: 'ownrelay' },
      timestamp: pino.stdTimeFunctions.isoTime,
      formatters: { level: (label) => ({ level: label }) },
    },
    destination ?? pino.destination({ fd: 1, sync: false }),
  );
}

/** A logger that drops everything, for unit tests of modules that log. */
export function silentLogger(): Logger {
  return pino({ level: 'silent' });
}
