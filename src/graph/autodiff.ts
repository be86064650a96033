/**
 * Reverse-mode automatic differentiation on the graph IR.
 *
 * vjp(outputs, cotangents, wrt) appends the backward graph: it walks the nodes that lie on a path from some
 * `wrt` value to some output, in reverse topological order, and calls each op's gradient rule (ops.ts).
 * Nodes off those paths (frozen weights, masks, position tables) get no backward work at all, and a rule is
 * told which of its inputs need a gradient so it skips the others. Cotangents of a value used several
 * times are summed. `wrt` may mix inputs and intermediate values (an intermediate's gradient is its total
 * cotangent, kept while the walk goes on to its ancestors).
 */
import { type Node, Value, isFloat, topoSort } from './ir.ts';
import { OPS, add, constant, zerosLike } from './ops.ts';

/**
 * Vector-Jacobian product: d(sum_i <outputs[i], cotangents[i]>) / d wrt[j], one Value per `wrt`
 * (zeros only when a value does not influence the outputs; a non-float `wrt` is an error).
 */
export function vjp(outputs: Value[], cotangents: Value[], wrt: Value[]): Value[] {
  if (outputs.length !== cotangents.length) throw new Error('vjp: one cotangent per output');
  for (const w of wrt) if (!isFloat(w.dtype)) throw new Error(`vjp: cannot differentiate with respect to ${w}: ${w.dtype} is not a float type`);
  outputs.forEach((o, i) => {
    const c = cotangents[i];
    if (c.dtype !== o.dtype || c.rank !== o.rank) throw new Error(`vjp: cotangent ${c} does not match output ${o}`);
  });
  const nodes = topoSort(outputs);

  // Values that depend on some wrt value: only these need cotangents.
  const depends = new Set<Value>(wrt);
  for (const n of nodes) if (n.inputs.some((x) => depends.has(x))) for (const o of n.outputs) depends.add(o);

  const wanted = new Set<Value>(wrt);
  const grads = new Map<Value, Value>();
  const accumulate = (v: Value, g: Value) => {
    const prev = grads.get(v);
    grads.set(v, prev ? add(prev, g) : g);
  };
  outputs.forEach((o, i) => {
    if (depends.has(o)) accumulate(o, cotangents[i]);
  });

  for (let k = nodes.length - 1; k >= 0; k--) {
    const node: Node = nodes[k];
    const needs = node.inputs.map((x) => depends.has(x) && isFloat(x.dtype));
    if (!needs.some(Boolean)) continue;
    const gouts = node.outputs.map((o) => grads.get(o));
    if (gouts.every((g) => g === undefined)) continue;
    const def = OPS[node.op];
    if (!def.grad) {
      throw new Error(`no gradient for ${node.op} (${node.name}): ${def.noGrad ?? 'forward-only op'}`);
    }
    // Backward nodes are named after the forward node, so errors in them point at the model's layer.
    const rule = def.grad;
    const gins = node.outputs[0].graph.scopeAs(`${node.name}.grad`, () => rule(node, gouts, needs));
    node.inputs.forEach((x, i) => {
      const g = gins[i];
      if (!needs[i] || !g) return;
      if (g.dtype !== x.dtype) throw new Error(`gradient of ${node.op} (${node.name}) has dtype ${g.dtype}, input ${x.dtype}`);
      accumulate(x, g);
    });
    for (const o of node.outputs) if (!wanted.has(o)) grads.delete(o); // free: each node is visited once
  }
  return wrt.map((w) => grads.get(w) ?? zerosLike(w));
}

/** d loss / d wrt for a scalar (or any-shaped, summed) loss. */
export function grad(loss: Value, wrt: Value[]): Value[] {
  const size = loss.size;
  if (size === undefined) throw new Error(`grad: loss ${loss} must have a static shape`);
  const ones = constant(loss, new Array(size).fill(1), loss.shape as number[]);
  return vjp([loss], [ones], wrt);
}

