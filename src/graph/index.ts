/** The engine: graph IR, primitive ops with gradient rules, composites, autodiff, ONNX emit and runtime. */
export * from './ir.ts';
export * from './ops.ts';
export * from './nn.ts';
export * from './autodiff.ts';
export { emitModel, encodeModel, OPSET } from './onnx.ts';
export * from './runtime.ts';
