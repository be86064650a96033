/**
 * AdamW with torch 1.13 semantics (torch.optim.AdamW, single-tensor path: foreach=False, amsgrad=False,
 * maximize=False), over Float32Arrays in JS: the trainable parameters (LoRA, mapper) are small.
 *
 * Per parameter, at step t = 1, 2, ... (from m = v = 0):
 *   p <- p * (1 - lr*wd)                                  decoupled weight decay, applied first
 *   m <- b1*m + (1-b1)*g
 *   v <- b2*v + (1-b2)*g*g
 *   p <- p - (lr / (1-b1^t)) * m / (sqrt(v) / sqrt(1-b2^t) + eps)
 * Bias corrections and step sizes are float64 (Python doubles); the tensor arithmetic is float32 and is
 * rounded (Math.fround) wherever torch rounds: each scalar operand becomes a float32, each op result too.
 * `add_(g, alpha)` is a fused multiply-add in torch's vectorised CPU kernel; here it is m + alpha*g
 * evaluated in float64 and rounded once (equal to the FMA except in rare double-rounding cases).
 */

const f32 = Math.fround;

export interface AdamWOptions {
  lr: number;
  betas?: [number, number];
  eps?: number;
  weightDecay?: number;
}

/** Serialisable optimiser state: per-parameter step count and moments. */
export interface AdamWState {
  step: Record<string, number>;
  expAvg: Record<string, Float32Array>;
  expAvgSq: Record<string, Float32Array>;
}

export class AdamW {
  lr: number;
  readonly beta1: number;
  readonly beta2: number;
  readonly eps: number;
  readonly weightDecay: number;
  private st: AdamWState = { step: {}, expAvg: {}, expAvgSq: {} };

  constructor(opts: AdamWOptions) {
    this.lr = opts.lr;
    [this.beta1, this.beta2] = opts.betas ?? [0.9, 0.999];
    this.eps = opts.eps ?? 1e-8;
    this.weightDecay = opts.weightDecay ?? 0.01;
    if (!(this.lr >= 0) || !(this.eps >= 0) || !(this.weightDecay >= 0)) throw new Error('AdamW: lr, eps and weight_decay must be >= 0');
    if (!(this.beta1 >= 0 && this.beta1 < 1 && this.beta2 >= 0 && this.beta2 < 1)) throw new Error('AdamW: betas must be in [0, 1)');
  }

  /**
   * One optimiser step, updating `params` in place. Parameters without a gradient (absent from `grads`)
   * are skipped and keep their step count, like torch's p.grad is None. `lr` overrides the rate (schedules).
   */
  step(params: Record<string, Float32Array>, grads: Record<string, Float32Array>, lr = this.lr): void {
    const { beta1: b1, beta2: b2, eps, weightDecay: wd } = this;
    const decay = f32(1 - lr * wd);
    const b1f = f32(b1);
    const b2f = f32(b2);
    const oneMinusB1 = f32(1 - b1);
    const oneMinusB2 = f32(1 - b2);
    const epsF = f32(eps);
    for (const [name, p] of Object.entries(params)) {
      const g = grads[name];
      if (!g) continue;
      if (g.length !== p.length) throw new Error(`AdamW: gradient of ${name} has ${g.length} values, the parameter ${p.length}`);
      let m = this.st.expAvg[name];
      let v = this.st.expAvgSq[name];
      if (!m) {
        m = this.st.expAvg[name] = new Float32Array(p.length);
        v = this.st.expAvgSq[name] = new Float32Array(p.length);
        this.st.step[name] = 0;
      }
      const t = ++this.st.step[name];
      const bc1 = 1 - b1 ** t;
      const bc2 = 1 - b2 ** t;
      const stepSize = lr / bc1;
      const bc2Sqrt = f32(Math.sqrt(bc2));
      const negStep = f32(-stepSize);
      for (let i = 0; i < p.length; i++) {
        const gi = g[i];
        const pi = f32(p[i] * decay); // param.mul_(1 - lr*wd)
        const mi = f32(f32(m[i] * b1f) + oneMinusB1 * gi); // exp_avg.mul_(b1).add_(g, alpha=1-b1)
        const vi = f32(f32(v[i] * b2f) + f32(f32(oneMinusB2 * gi) * gi)); // exp_avg_sq.mul_(b2).addcmul_(g, g, value=1-b2)
        const denom = f32(f32(f32(Math.sqrt(vi)) / bc2Sqrt) + epsF); // (exp_avg_sq.sqrt() / bc2_sqrt).add_(eps)
        p[i] = f32(pi + f32(f32(negStep * mi) / denom)); // param.addcdiv_(exp_avg, denom, value=-step_size)
        m[i] = mi;
        v[i] = vi;
      }
    }
  }

  /** The state (live references: copy before mutating). */
  state(): AdamWState {
    return this.st;
  }

  loadState(s: AdamWState): void {
    for (const k of Object.keys(s.expAvg))
      if (!s.expAvgSq[k] || s.step[k] === undefined || s.expAvgSq[k].length !== s.expAvg[k].length)
        throw new Error(`AdamW.loadState: incomplete state for ${k}`);
    this.st = {
      step: { ...s.step },
      expAvg: Object.fromEntries(Object.entries(s.expAvg).map(([k, a]) => [k, Float32Array.from(a)])),
      expAvgSq: Object.fromEntries(Object.entries(s.expAvgSq).map(([k, a]) => [k, Float32Array.from(a)])),
    };
  }
}

/**
 * torch.nn.utils.clip_grad_norm_ (norm_type 2): total = ||(||g_1||, ..., ||g_n||)||, each norm a float32;
 * clip_coef = max_norm / (total + 1e-6); gradients are scaled in place by min(clip_coef, 1). Returns total.
 */
export function clipGradNorm(grads: Record<string, Float32Array> | Float32Array[], maxNorm: number): number {
  const list = Array.isArray(grads) ? grads : Object.values(grads);
  if (list.length === 0) return 0;
  let sumSq = 0;
  for (const g of list) {
    let s = 0;
    for (let i = 0; i < g.length; i++) s += g[i] * g[i];
    const n = f32(Math.sqrt(s));
    sumSq += n * n;
  }
  const total = f32(Math.sqrt(sumSq));
  const coef = f32(f32(maxNorm) / f32(total + f32(1e-6)));
  if (coef < 1) for (const g of list) for (let i = 0; i < g.length; i++) g[i] = f32(g[i] * coef);
  return total;
}
