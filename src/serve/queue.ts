/**
 * The server's work queue: jobs run one at a time (ONNX Runtime already spreads one inference over every core),
 * with at most `maxWaiting` jobs waiting behind the running one.
 *
 * A request takes a slot (`reserve`) as soon as it arrives, before its body is read, so a full server answers
 * 503 at once instead of buffering bodies it cannot serve. The slot is given back when the request ends without
 * a job (rejected, client gone), or when its job settles: a job whose request timed out while it ran still holds
 * the worker until it reaches its next abort point, and its slot until then.
 */

/** Thrown into a job (and by `run`) once its signal has aborted. */
export class AbortedError extends Error {
  constructor() {
    super('aborted');
    this.name = 'AbortedError';
  }
}

export class Slot {
  private released = false;
  /** set once a job took the slot over (it then releases it itself) */
  owned = false;

  constructor(private readonly onRelease: () => void) {}

  release(): void {
    if (this.released) return;
    this.released = true;
    this.onRelease();
  }

  get isReleased(): boolean {
    return this.released;
  }
}

interface Job {
  fn: () => Promise<unknown>;
  resolve: (v: unknown) => void;
  reject: (e: unknown) => void;
  signal: AbortSignal;
  slot: Slot;
  onAbort: () => void;
}

export class WorkQueue {
  private reserved = 0;
  private running = false;
  private readonly waiting: Job[] = [];
  /** moving average of job run time (ms), for Retry-After */
  private avgMs = 0;
  private jobsDone = 0;

  constructor(readonly maxWaiting: number) {
    if (!Number.isInteger(maxWaiting) || maxWaiting < 0) throw new RangeError(`maxWaiting must be an integer >= 0, got ${maxWaiting}`);
  }

  /** A slot for one more request, or undefined when 1 running + maxWaiting waiting are already taken. */
  reserve(): Slot | undefined {
    if (this.reserved >= 1 + this.maxWaiting) return undefined;
    this.reserved++;
    return new Slot(() => this.reserved--);
  }

  /** Requests holding a slot (running, waiting, or still uploading their body). */
  get inSystem(): number {
    return this.reserved;
  }

  get busy(): boolean {
    return this.running;
  }

  get queued(): number {
    return this.waiting.length;
  }

  /** Seconds a client turned away now should wait before retrying (at least 1). */
  retryAfterSeconds(): number {
    const per = this.jobsDone ? this.avgMs : 1000;
    return Math.max(1, Math.ceil((per * (this.waiting.length + 1)) / 1000));
  }

  /**
   * Runs `fn` when the worker is free. The job owns `slot` from now on and releases it when it settles. When
   * `signal` aborts while the job waits, it leaves the queue at once and the promise rejects with AbortedError;
   * a running job is not interrupted here (fn checks the signal itself).
   */
  run<T>(slot: Slot, signal: AbortSignal, fn: () => Promise<T>): Promise<T> {
    slot.owned = true;
    return new Promise<T>((resolve, reject) => {
      if (signal.aborted) {
        slot.release();
        reject(new AbortedError());
        return;
      }
      const job: Job = {
        fn,
        resolve: resolve as (v: unknown) => void,
        reject,
        signal,
        slot,
        onAbort: () => {
          const i = this.waiting.indexOf(job);
          if (i < 0) return; // already running: it finishes (or aborts itself) and then settles
          this.waiting.splice(i, 1);
          slot.release();
          reject(new AbortedError());
        },
      };
      signal.addEventListener('abort', job.onAbort, { once: true });
      this.waiting.push(job);
      this.pump();
    });
  }

  private pump(): void {
    if (this.running) return;
    const job = this.waiting.shift();
    if (!job) return;
    this.running = true;
    const t0 = performance.now();
    let p: Promise<unknown>;
    try {
      p = job.fn();
    } catch (e) {
      p = Promise.reject(e);
    }
    p.then(job.resolve, job.reject).finally(() => {
      job.signal.removeEventListener('abort', job.onAbort);
      const ms = performance.now() - t0;
      this.avgMs = this.jobsDone ? 0.8 * this.avgMs + 0.2 * ms : ms;
      this.jobsDone++;
      this.running = false;
      job.slot.release();
      this.pump();
    });
  }

  /** Resolves once nothing runs and nothing waits. */
  async drained(): Promise<void> {
    while (this.running || this.waiting.length) await new Promise((r) => setTimeout(r, 10));
  }
}
