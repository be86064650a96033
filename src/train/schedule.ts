/** Learning-rate schedule: linear warmup from 0, then cosine decay to `minRatio * peak` at `total` steps. */
export interface ScheduleConfig {
  peak: number;
  warmupSteps: number;
  totalSteps: number;
  /** final LR as a fraction of the peak (default 0.05) */
  minRatio?: number;
}

/** LR for optimizer step `step` (1-based, as AdamW counts). */
export function learningRate(step: number, c: ScheduleConfig): number {
  const minLr = c.peak * (c.minRatio ?? 0.05);
  if (c.warmupSteps > 0 && step <= c.warmupSteps) return (c.peak * step) / c.warmupSteps;
  const span = Math.max(1, c.totalSteps - c.warmupSteps);
  const progress = Math.min(1, Math.max(0, (step - c.warmupSteps) / span));
  return minLr + 0.5 * (c.peak - minLr) * (1 + Math.cos(Math.PI * progress));
}
