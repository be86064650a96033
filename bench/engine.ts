/**
 * Engine benchmark: fp32 matmul throughput through our graph -> ONNX -> ORT path, and forward+backward of an
 * MLP block via our autodiff. External reference (PyTorch 1.13, 2 threads, this machine; measured outside this
 * repository, no script here): 128-199 GFLOP/s matmul, 231-305 ms for the MLP step.
 */
import { grad } from '../src/graph/autodiff.ts';
import { Graph } from '../src/graph/ir.ts';
import { matmul, reduceSum } from '../src/graph/ops.ts';
import { compile, tensor } from '../src/graph/runtime.ts';
import { silu } from '../src/graph/nn.ts';
import { log, median, randomArray, round, timeit } from './util.ts';

async function matmulGflops(m: number, k: number, n: number, runs: number): Promise<number> {
  const g = new Graph();
  const x = g.input('x', 'float32', [m, k]);
  const w = g.constant(randomArray(k * n, 0.02, 7), [k, n], 'float32', 'w'); // frozen weight: an initializer
  const s = await compile({ y: matmul(x, w) }, { name: 'bench-matmul' });
  const feeds = { x: tensor(randomArray(m * k, 1, 3), [m, k]) };
  const ms = median(await timeit(() => s.run(feeds), runs, 2));
  await s.release();
  const gf = (2 * m * k * n) / (ms / 1000) / 1e9;
  log(`matmul ${m}x${k}x${n}: ${round(ms, 2)} ms, ${round(gf)} GFLOP/s`);
  return gf;
}

async function mlpFwdBwd(runs: number): Promise<number> {
  const [t, d, f] = [128, 2048, 8192];
  const g = new Graph();
  const x = g.input('x', 'float32', [t, d]);
  const w1 = g.input('w1', 'float32', [d, f]);
  const w2 = g.input('w2', 'float32', [f, d]);
  const y = matmul(silu(matmul(x, w1)), w2);
  const loss = reduceSum(y, [0, 1]);
  const [gx, gw1, gw2] = grad(loss, [x, w1, w2]);
  const s = await compile({ loss, gx, gw1, gw2 }, { name: 'bench-mlp' });
  const feeds = {
    x: tensor(randomArray(t * d, 1, 1), [t, d]),
    w1: tensor(randomArray(d * f, 0.02, 2), [d, f]),
    w2: tensor(randomArray(f * d, 0.02, 3), [f, d]),
  };
  const ms = median(await timeit(() => s.run(feeds), runs, 2));
  await s.release();
  log(`MLP [128,2048]->8192->2048 SiLU fwd+bwd: ${round(ms)} ms`);
  return ms;
}

export async function benchEngine(): Promise<Record<string, number>> {
  const matmul_1024_gflops = await matmulGflops(1024, 1024, 1024, 20);
  const matmul_128x2048x8192_gflops = await matmulGflops(128, 2048, 8192, 20);
  const mlp_fwd_bwd_ms = await mlpFwdBwd(7);
  return {
    matmul_1024_gflops: round(matmul_1024_gflops),
    matmul_128x2048x8192_gflops: round(matmul_128x2048x8192_gflops),
    mlp_fwd_bwd_ms: round(mlp_fwd_bwd_ms),
  };
}
