import { metrics, SpanKind, SpanStatusCode, trace } from '@opentelemetry/api';
import {
  type DataPoint,
  type Histogram,
  MeterProvider,
  type MetricData,
  MetricReader,
} from '@opentelemetry/sdk-metrics';
import {
  BasicTracerProvider,
  InMemorySpanExporter,
  type ReadableSpan,
  SimpleSpanProcessor,
} from '@opentelemetry/sdk-trace-base';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { fixture, nextEvent, pids, testPool, until } from '../helpers.js';

class TestReader extends MetricReader {
  protected override async onShutdown(): Promise<void> {}
  protected override async onForceFlush(): Promise<void> {}
}

const exporter = new InMemorySpanExporter();
const reader = new TestReader();

beforeAll(() => {
  trace.setGlobalTracerProvider(
    new BasicTracerProvider({ spanProcessors: [new SimpleSpanProcessor(exporter)] }),
  );
  metrics.setGlobalMeterProvider(new MeterProvider({ readers: [reader] }));
});
afterAll(() => {
  trace.disable();
  metrics.disable();
});
beforeEach(() => exporter.reset());

function spansOf(fn: string): ReadableSpan[] {
  return exporter.getFinishedSpans().filter((s) => s.name === `pyvisor.call ${fn}`);
}

async function metric(name: string, pool: string): Promise<DataPoint<unknown>[]> {
  const { resourceMetrics } = await reader.collect();
  const all: MetricData[] = resourceMetrics.scopeMetrics
    .filter((s) => s.scope.name === 'pyvisor')
    .flatMap((s) => s.metrics);
  const found = all.find((m) => m.descriptor.name === name);
  return ((found?.dataPoints ?? []) as DataPoint<unknown>[]).filter(
    (p) => p.attributes['pyvisor.pool.name'] === pool,
  );
}

describe('OpenTelemetry', () => {
  it('records a CLIENT span per call and hands its traceparent to Python', async () => {
    const pool = testPool({ name: 'otel-ok' });
    await pool.ready();
    const pid = pids(pool)[0];
    const ctx = (await pool.call('context', [], { session: 's' })) as { traceparent: string };
    const [span] = spansOf('context');
    expect(span).toBeDefined();
    expect(span!.kind).toBe(SpanKind.CLIENT);
    expect(span!.attributes).toMatchObject({
      'pyvisor.pool.name': 'otel-ok',
      'pyvisor.handler': 'context',
      'pyvisor.session': 's',
      'pyvisor.worker.id': 0,
      'pyvisor.worker.pid': pid,
      'pyvisor.call.outcome': 'ok',
    });
    expect(typeof span!.attributes['pyvisor.call.queue_wait']).toBe('number');
    expect(span!.events.map((e) => e.name)).toContain('pyvisor.execution.start');
    const { traceId, spanId } = span!.spanContext();
    expect(ctx.traceparent).toBe(`00-${traceId}-${spanId}-01`);
  });

  it('with concurrency, each async task sees its own traceparent; one span per call', async () => {
    const pool = testPool({ name: 'otel-aio', script: fixture('aio.py'), concurrency: 16 });
    await pool.ready();
    const tags = Array.from({ length: 8 }, (_, i) => `tp${i}`);
    const running = Promise.all(
      tags.map((tag) => nextEvent(pool, 'worker.stderr', (e) => e.line === `started ${tag}`)),
    );
    const calls = tags.map(
      (tag) => pool.call('whoami', ['otel', tag]) as Promise<{ traceparent: string; tag: string }>,
    );
    await running;
    await pool.call('release', ['otel']);
    const results = await Promise.all(calls);
    const spans = spansOf('whoami');
    expect(spans).toHaveLength(8);
    const expected = new Set(
      spans.map((s) => `00-${s.spanContext().traceId}-${s.spanContext().spanId}-01`),
    );
    expect(new Set(results.map((r) => r.traceparent))).toEqual(expected);
  });

  it('marks Python errors, timeouts, crashes and a full queue on the span and in metrics', async () => {
    const pool = testPool({
      name: 'otel-errors',
      maxQueue: 0,
      restart: { minDelay: 1, maxDelay: 2 },
    });
    await pool.ready();
    await pool.call('fail', ['x']).catch(() => {});
    await pool.call('sleep', [10], { timeout: 100 }).catch(() => {});
    // The worker is busy until Python acknowledges the interrupt; maxQueue 0 would reject.
    await until(pool, () => pool.stats().workers[0]!.state === 'ready');
    await pool.call('crash', [3]).catch(() => {});
    await pool.ready();
    const blocker = pool.call('sleep', [0.3]);
    await pool.call('add', [1, 2]).catch(() => {}); // queue full: maxQueue 0
    await blocker;
    const outcome = (fn: string) => spansOf(fn).map((s) => s.attributes['pyvisor.call.outcome']);
    expect(outcome('fail')).toEqual(['ERR_PYTHON']);
    expect(outcome('sleep')).toEqual(['ERR_CALL_TIMEOUT', 'ok']);
    expect(outcome('crash')).toEqual(['ERR_WORKER_CRASHED']);
    expect(outcome('add')).toEqual(['ERR_QUEUE_FULL']);
    const failSpan = spansOf('fail')[0]!;
    expect(failSpan.status.code).toBe(SpanStatusCode.ERROR);
    expect(failSpan.status.message).toContain('ValueError');

    const calls = await metric('pyvisor.calls', 'otel-errors');
    const byOutcome = Object.fromEntries(
      calls.map((p) => [p.attributes['pyvisor.call.outcome'], p.value]),
    );
    expect(byOutcome).toEqual({
      ERR_PYTHON: 1,
      ERR_CALL_TIMEOUT: 1,
      ERR_WORKER_CRASHED: 1,
      ERR_QUEUE_FULL: 1,
      ok: 1,
    });
    const restarts = await metric('pyvisor.worker.restarts', 'otel-errors');
    expect(restarts.find((p) => p.attributes['pyvisor.restart.reason'] === 'crashed')?.value).toBe(
      1,
    );
    const duration = await metric('pyvisor.call.duration', 'otel-errors');
    const total = duration.reduce((n, p) => n + (p.value as Histogram).count, 0);
    expect(total).toBe(5);
  });

  it('measures init time, checkout wait, workers by state and the queue', async () => {
    const pool = testPool({ name: 'otel-gauges', size: 2 });
    await pool.ready();
    await pool.call('add', [1, 2]);
    const init = await metric('pyvisor.worker.init.duration', 'otel-gauges');
    expect((init[0]!.value as Histogram).count).toBe(2);
    const wait = await metric('pyvisor.call.checkout_wait', 'otel-gauges');
    expect((wait[0]!.value as Histogram).count).toBe(1);
    const workers = await metric('pyvisor.workers', 'otel-gauges');
    expect(workers.find((p) => p.attributes['pyvisor.worker.state'] === 'ready')?.value).toBe(2);
    const queue = await metric('pyvisor.queue.length', 'otel-gauges');
    expect(queue[0]?.value).toBe(0);
  });

  it('counts health-check failures and circuit transitions', async () => {
    const pool = testPool({ name: 'otel-health', healthCheck: { interval: 50, timeout: 200 } });
    await pool.ready();
    const failed = nextEvent(pool, 'health.failed');
    process.kill(pids(pool)[0]!, 'SIGSTOP');
    await failed;
    const health = await metric('pyvisor.health_check.failures', 'otel-health');
    expect(health[0]?.value).toBe(1);
  });
});
