import type { EventEmitter } from 'eventemitter3';
import type { PoolEvents } from '../pool/events.js';

/** Any logger with pino-style methods: `(object, message)`. pino, bunyan-likes and console fit. */
export interface Logger {
  info(object: Record<string, unknown>, message?: string): void;
  warn(object: Record<string, unknown>, message?: string): void;
  error(object: Record<string, unknown>, message?: string): void;
}

function errorFields(error: unknown): Record<string, unknown> | undefined {
  if (!error || typeof error !== 'object') return undefined;
  const e = error as { code?: string; message?: string };
  return { code: e.code, message: e.message?.split('\n')[0] };
}

/** Turns pool events into structured log records. */
export function attachLogger(pool: EventEmitter<PoolEvents>, name: string, logger: Logger): void {
  const base = { pool: name };
  pool.on('worker.stderr', (e) =>
    logger.info(
      { ...base, workerId: e.workerId, pid: e.pid, stream: 'stderr', line: e.line },
      'worker stderr',
    ),
  );
  pool.on('worker.stdout', (e) =>
    logger.info(
      { ...base, workerId: e.workerId, pid: e.pid, stream: 'stdout', line: e.line },
      'worker stdout',
    ),
  );
  pool.on('worker.ready', (e) =>
    logger.info(
      { ...base, workerId: e.workerId, pid: e.pid, initMs: Math.round(e.initMs) },
      'worker ready',
    ),
  );
  pool.on('worker.exit', (e) => {
    const record = {
      ...base,
      workerId: e.workerId,
      pid: e.pid,
      reason: e.reason,
      exitCode: e.exitCode,
      signal: e.signal,
      error: errorFields(e.error),
    };
    if (e.reason === 'stopped') logger.info(record, 'worker stopped');
    else logger.warn(record, `worker ${e.reason}`);
  });
  pool.on('worker.restart', (e) =>
    logger.info(
      { ...base, workerId: e.workerId, reason: e.reason, delay: e.delay },
      'worker restart scheduled',
    ),
  );
  pool.on('worker.recycle', (e) =>
    logger.info({ ...base, workerId: e.workerId, pid: e.pid, why: e.why }, 'worker recycled'),
  );
  pool.on('health.failed', (e) =>
    logger.warn({ ...base, workerId: e.workerId, pid: e.pid }, 'worker failed its health check'),
  );
  pool.on('circuit.change', (e) => {
    const record = { ...base, state: e.state, error: errorFields(e.error) };
    if (e.state === 'open') logger.error(record, 'circuit breaker opened');
    else logger.info(record, `circuit breaker ${e.state}`);
  });
  pool.on('session.moved', (e) =>
    logger.warn({ ...base, ...e }, 'session moved to another worker'),
  );
  pool.on('pool.failed', (e) =>
    logger.error({ ...base, error: errorFields(e.error) }, 'pool failed'),
  );
  pool.on('worker.added', (e) =>
    logger.info({ ...base, workerId: e.workerId, size: e.size }, 'worker added: calls are waiting'),
  );
  pool.on('worker.removed', (e) =>
    logger.info({ ...base, workerId: e.workerId, size: e.size }, 'worker removed: idle'),
  );
  pool.on('watch.change', (e) =>
    logger.info({ ...base, files: e.files }, 'python files changed; reloading'),
  );
  pool.on('reload.start', () => logger.info(base, 'reload started'));
  pool.on('reload.done', () => logger.info(base, 'reload done: every worker runs the new code'));
  pool.on('reload.failed', (e) =>
    logger.error(
      { ...base, error: errorFields(e.error) },
      'reload failed; the old workers keep serving',
    ),
  );
  pool.on('warning', (e) => logger.warn({ ...base, ...e }, e.message.split('\n')[0]));
  pool.on('pool.recovered', (e) =>
    logger.info({ ...base, downMs: e.downMs, trips: e.trips }, 'pool recovered'),
  );
}
