/** Structured logger passed in by the user; every line carries its context fields (workflowId, runId, workerId). */
export interface Logger {
  debug(message: string, fields?: Record<string, unknown>): void;
  info(message: string, fields?: Record<string, unknown>): void;
  warn(message: string, fields?: Record<string, unknown>): void;
  error(message: string, fields?: Record<string, unknown>): void;
}

export type LogLevel = 'debug' | 'info' | 'warn' | 'error';
const ORDER: Record<LogLevel, number> = { debug: 0, info: 1, warn: 2, error: 3 };

/** A logger that writes one JSON line per entry to the given sink (stderr by default in the host). */
export function jsonLogger(
  write: (line: string) => void,
  level: LogLevel = 'info',
  base: Record<string, unknown> = {},
): Logger {
  const emit = (l: LogLevel, message: string, fields?: Record<string, unknown>): void => {
    if (ORDER[l] < ORDER[level]) return;
    write(JSON.stringify({ level: l, message, ...base, ...fields }));
  };
  return {
    debug: (m, f) => emit('debug', m, f),
    info: (m, f) => emit('info', m, f),
    warn: (m, f) => emit('warn', m, f),
    error: (m, f) => emit('error', m, f),
  };
}

/** Adds fields to every line of `logger`. */
export function childLogger(logger: Logger, fields: Record<string, unknown>): Logger {
  return {
    debug: (m, f) => logger.debug(m, { ...fields, ...f }),
    info: (m, f) => logger.info(m, { ...fields, ...f }),
    warn: (m, f) => logger.warn(m, { ...fields, ...f }),
    error: (m, f) => logger.error(m, { ...fields, ...f }),
  };
}

export const silentLogger: Logger = { debug() {}, info() {}, warn() {}, error() {} };
