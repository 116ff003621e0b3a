import {
  type Attributes,
  type Counter,
  createNoopMeter,
  type Histogram,
  type Meter,
  metrics,
  type ObservableCallback,
  ProxyTracerProvider,
  type Span,
  SpanKind,
  SpanStatusCode,
  type Tracer,
  trace,
} from '@opentelemetry/api';

/** Instrumentation scope of every span and metric pyvisor records. */
export const SCOPE = 'pyvisor';
export const SCOPE_VERSION = '0.1.0';

/** What a pool reports to its gauges when the metrics SDK collects. */
export interface GaugeSource {
  workersByState(): Record<string, number>;
  queued(): number;
}

/** Per-call telemetry: one span and the timings metrics need. Absent when telemetry is off. */
export interface CallTelemetry {
  readonly span: Span | null;
  /** W3C traceparent of the span, sent to Python. */
  readonly traceparent: string | undefined;
  dispatched(workerId: number, pid: number | null, queueWaitMs: number): void;
  settled(outcome: string, error: unknown, durationMs: number): void;
}

function traceparentOf(span: Span): string | undefined {
  const ctx = span.spanContext();
  if (!ctx.traceId || /^0+$/.test(ctx.traceId)) return undefined;
  return `00-${ctx.traceId}-${ctx.spanId}-${(ctx.traceFlags & 0xff).toString(16).padStart(2, '0')}`;
}

/**
 * The pool's OpenTelemetry instruments. Only `@opentelemetry/api` is used: with no SDK registered
 * the API is a no-op, and the per-call path checks `tracingOn()` / `metricsOn` first so it
 * allocates nothing for telemetry that is off.
 */
export class PoolTelemetry {
  readonly metricsOn: boolean;
  readonly #pool: string;
  readonly #meter: Meter;
  #tracer: Tracer | null = null;
  readonly #checkoutWait: Histogram;
  readonly #callDuration: Histogram;
  readonly #initDuration: Histogram;
  readonly #calls: Counter;
  readonly #restarts: Counter;
  readonly #healthFailures: Counter;
  readonly #circuitTransitions: Counter;
  // Attribute sets are reused: a label set per outcome is built once per pool.
  readonly #outcomeAttrs = new Map<string, Attributes>();
  readonly #poolAttrs: Attributes;
  #gaugeCallback: (() => void) | null = null;

  constructor(pool: string, gauges: GaugeSource) {
    this.#pool = pool;
    this.#poolAttrs = { 'pyvisor.pool.name': pool };
    this.#meter = metrics.getMeter(SCOPE, SCOPE_VERSION);
    // Metrics are decided once: the meter provider must be registered before the pool exists.
    this.metricsOn = this.#meter !== createNoopMeter();
    const m = this.#meter;
    const histogram = (name: string, description: string) =>
      m.createHistogram(name, { unit: 's', description });
    const counter = (name: string, unit: string, description: string) =>
      m.createCounter(name, { unit, description });
    this.#checkoutWait = histogram(
      'pyvisor.call.checkout_wait',
      'Time a call waited for a free worker',
    );
    this.#callDuration = histogram(
      'pyvisor.call.duration',
      'Duration of a call from the request to its settlement, queue wait included',
    );
    this.#initDuration = histogram(
      'pyvisor.worker.init.duration',
      'Time from spawning a worker to its ready message',
    );
    this.#calls = counter('pyvisor.calls', '{call}', 'Calls by outcome (ok or an error code)');
    this.#restarts = counter('pyvisor.worker.restarts', '{restart}', 'Worker restarts by reason');
    this.#healthFailures = counter(
      'pyvisor.health_check.failures',
      '{failure}',
      'Workers that did not answer a health check in time',
    );
    this.#circuitTransitions = counter(
      'pyvisor.circuit.transitions',
      '{transition}',
      'Circuit breaker state changes by new state',
    );
    if (this.metricsOn) {
      const workers = m.createObservableGauge('pyvisor.workers', {
        unit: '{worker}',
        description: 'Worker slots by state',
      });
      const queue = m.createObservableGauge('pyvisor.queue.length', {
        unit: '{call}',
        description: 'Calls waiting for a worker',
      });
      const callback: ObservableCallback = (result) => {
        result.observe(gauges.queued(), this.#poolAttrs);
      };
      const workersCallback: ObservableCallback = (result) => {
        for (const [state, count] of Object.entries(gauges.workersByState())) {
          result.observe(count, { ...this.#poolAttrs, 'pyvisor.worker.state': state });
        }
      };
      queue.addCallback(callback);
      workers.addCallback(workersCallback);
      this.#gaugeCallback = () => {
        queue.removeCallback(callback);
        workers.removeCallback(workersCallback);
      };
    }
  }

  /** True when a tracer provider (an SDK) is registered; checked per call, so it may come late. */
  tracingOn(): boolean {
    const provider = trace.getTracerProvider();
    if (provider instanceof ProxyTracerProvider) {
      return provider.getDelegateTracer(SCOPE, SCOPE_VERSION) !== undefined;
    }
    return true;
  }

  /** Starts the telemetry of one call, or returns null when both traces and metrics are off. */
  startCall(fn: string, session: string | undefined): CallTelemetry | null {
    const tracing = this.tracingOn();
    if (!tracing && !this.metricsOn) return null;
    let span: Span | null = null;
    if (tracing) {
      this.#tracer ??= trace.getTracer(SCOPE, SCOPE_VERSION);
      span = this.#tracer.startSpan(`pyvisor.call ${fn}`, {
        kind: SpanKind.CLIENT,
        attributes: {
          'pyvisor.pool.name': this.#pool,
          'pyvisor.handler': fn,
          ...(session !== undefined ? { 'pyvisor.session': session } : {}),
        },
      });
      span.addEvent('pyvisor.checkout.start');
    }
    const metricsOn = this.metricsOn;
    const telemetry = this;
    return {
      span,
      traceparent: span ? traceparentOf(span) : undefined,
      dispatched(workerId, pid, queueWaitMs) {
        if (metricsOn) telemetry.#checkoutWait.record(queueWaitMs / 1000, telemetry.#poolAttrs);
        if (!span) return;
        span.setAttribute('pyvisor.worker.id', workerId);
        if (pid !== null) span.setAttribute('pyvisor.worker.pid', pid);
        span.setAttribute('pyvisor.call.queue_wait', queueWaitMs / 1000);
        span.addEvent('pyvisor.execution.start', { 'pyvisor.worker.id': workerId });
      },
      settled(outcome, error, durationMs) {
        if (metricsOn) {
          const attrs = telemetry.#outcome(outcome);
          telemetry.#calls.add(1, attrs);
          telemetry.#callDuration.record(durationMs / 1000, attrs);
        }
        if (!span) return;
        span.setAttribute('pyvisor.call.outcome', outcome);
        if (outcome !== 'ok') {
          span.setAttribute('error.type', outcome);
          span.setStatus({
            code: SpanStatusCode.ERROR,
            message: error instanceof Error ? error.message.split('\n')[0] : String(error),
          });
          if (error instanceof Error) span.recordException(error);
        }
        span.end();
      },
    };
  }

  workerReady(initMs: number): void {
    if (this.metricsOn) this.#initDuration.record(initMs / 1000, this.#poolAttrs);
  }

  workerRestart(reason: string): void {
    if (this.metricsOn) {
      this.#restarts.add(1, { ...this.#poolAttrs, 'pyvisor.restart.reason': reason });
    }
  }

  healthCheckFailed(): void {
    if (this.metricsOn) this.#healthFailures.add(1, this.#poolAttrs);
  }

  circuitTransition(state: string): void {
    if (this.metricsOn) {
      this.#circuitTransitions.add(1, { ...this.#poolAttrs, 'pyvisor.circuit.state': state });
    }
  }

  /** Stops reporting gauges (the pool closed). */
  close(): void {
    this.#gaugeCallback?.();
    this.#gaugeCallback = null;
  }

  #outcome(outcome: string): Attributes {
    let attrs = this.#outcomeAttrs.get(outcome);
    if (!attrs) {
      attrs = { ...this.#poolAttrs, 'pyvisor.call.outcome': outcome };
      this.#outcomeAttrs.set(outcome, attrs);
    }
    return attrs;
  }
}

/** The `code` of a pyvisor error, or the name of any other error (e.g. `AbortError`). */
export function outcomeOf(error: unknown): string {
  if (error && typeof error === 'object') {
    const code = (error as { code?: unknown }).code;
    if (typeof code === 'string') return code;
    const name = (error as { name?: unknown }).name;
    if (typeof name === 'string') return name;
  }
  return 'error';
}
