/**
 * The server's work queue (p-queue, concurrency 1): jobs run one at a time (ONNX Runtime already spreads one
 * inference over every core), with at most `maxWaiting` jobs waiting behind the running one.
 *
 * A request joins only once its body is in (server.ts), so an upload in progress never holds a place. A job
 * whose signal aborts while it waits leaves the queue at once (its promise rejects with the signal's reason). A
 * running job is not interrupted here: it checks the signal itself at its next segment and keeps the worker until
 * then, so two inferences never overlap.
 */
import PQueue from 'p-queue';

export class WorkQueue {
  private readonly queue = new PQueue({ concurrency: 1 });
  /** the waiting jobs' own abort controllers: shutdown turns them all away at once */
  private readonly waiting = new Set<AbortController>();
  /** moving average of job run time (ms), for Retry-After */
  private avgMs = 0;
  private jobsDone = 0;

  constructor(readonly maxWaiting: number) {
    if (!Number.isInteger(maxWaiting) || maxWaiting < 0) throw new RangeError(`maxWaiting must be an integer >= 0, got ${maxWaiting}`);
  }

  get busy(): boolean {
    return this.queue.pending > 0;
  }

  get queued(): number {
    return this.queue.size;
  }

  /** True when a job added now would be one more than `maxWaiting` waiting. */
  get full(): boolean {
    return this.busy && this.queue.size >= this.maxWaiting;
  }

  /** Seconds a client turned away now should wait before retrying (at least 1). */
  retryAfterSeconds(): number {
    const per = this.jobsDone ? this.avgMs : 1000;
    return Math.max(1, Math.ceil((per * (this.queue.size + 1)) / 1000));
  }

  /**
   * Runs `fn` when the worker is free. When `signal` aborts while the job waits, the job leaves the queue and the
   * promise rejects with the signal's reason; once it runs, `fn` answers for the signal itself.
   */
  run<T>(signal: AbortSignal, fn: () => Promise<T>): Promise<T> {
    // p-queue frees the worker as soon as a running job's signal aborts; the signal it gets aborts only while the
    // job waits, so an aborted job still holds the worker until fn returns.
    const whileWaiting = new AbortController();
    const onAbort = () => whileWaiting.abort(signal.reason);
    if (signal.aborted) onAbort();
    else signal.addEventListener('abort', onAbort, { once: true });
    this.waiting.add(whileWaiting);
    const started = () => {
      this.waiting.delete(whileWaiting);
      signal.removeEventListener('abort', onAbort);
    };
    return this.queue
      .add(
        async () => {
          started();
          const t0 = performance.now();
          try {
            return await fn();
          } finally {
            const ms = performance.now() - t0;
            this.avgMs = this.jobsDone ? 0.8 * this.avgMs + 0.2 * ms : ms;
            this.jobsDone++;
          }
        },
        { signal: whileWaiting.signal },
      )
      .finally(started);
  }

  /** Turns every waiting job away: each rejects with `reason`. The running job goes on. */
  rejectWaiting(reason: Error): void {
    for (const ac of this.waiting) ac.abort(reason);
  }

  /** Resolves once nothing runs and nothing waits. */
  drained(): Promise<void> {
    return this.queue.onIdle();
  }
}
