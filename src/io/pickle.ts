/**
 * A restricted pickle reader for PyTorch state dicts. Written by hand: no well-kept JS library unpickles with
 * an allow-list, and a general unpickler is remote code execution by design (GLOBAL + REDUCE call anything).
 *
 * Nothing is ever executed. GLOBAL resolves only the names in `allowed` (the caller's allow-list) and refuses
 * anything else on sight, naming it; REDUCE and BUILD only apply the caller's handlers to those names.
 * Opcodes: everything protocol 2 writes, plus the protocol 4 framing/memo/unicode opcodes torch >= 2 may emit.
 */
import { UserError } from '../util/errors.ts';

/** A pickled tuple (kept apart from lists so that persistent ids and call arguments are recognisable). */
export class PyTuple {
  constructor(readonly items: unknown[]) {}
}

/** A pickled dict or OrderedDict: keys are strings or numbers, in insertion order. */
export class PyDict {
  readonly map = new Map<unknown, unknown>();
}

/** An allowed global (module.name), as pushed by GLOBAL; only `reduce` on it may create a value. */
export class PyGlobal {
  constructor(
    readonly module: string,
    readonly name: string,
  ) {}
  get qualname(): string {
    return `${this.module}.${this.name}`;
  }
}

/** Where the pickle bytes come from: the next byte, the next n bytes, and the position (for messages). */
export interface ByteSource {
  byte(): number;
  bytes(n: number): Uint8Array;
  readonly position: number;
}

export interface PickleHooks {
  /** True for module.name pairs the caller will handle in `reduce`; everything else is refused. */
  allowed(module: string, name: string): boolean;
  /** `callable(*args)` for an allowed global. */
  reduce(callable: PyGlobal, args: unknown[]): unknown;
  /** The object a persistent id (BINPERSID) stands for. */
  persistentLoad(pid: unknown): unknown;
}

const MARK = Symbol('mark');
const MAX_STACK = 10_000_000;

/** Bytes of a Uint8Array as a source, for pickles already in memory (zip `data.pkl`). */
export class BufferSource implements ByteSource {
  position = 0;
  constructor(
    private readonly buf: Uint8Array,
    private readonly where: string,
  ) {}
  byte(): number {
    if (this.position >= this.buf.length) throw new UserError(`pickle ends early at byte ${this.position}: truncated file`, this.where);
    return this.buf[this.position++]!;
  }
  bytes(n: number): Uint8Array {
    if (this.position + n > this.buf.length) throw new UserError(`pickle ends early at byte ${this.position} (needs ${n} more bytes): truncated file`, this.where);
    const out = this.buf.subarray(this.position, this.position + n);
    this.position += n;
    return out;
  }
}

const utf8 = new TextDecoder('utf-8', { fatal: true });

/** Runs one pickle (up to STOP) and returns its value. */
export function unpickle(src: ByteSource, hooks: PickleHooks, where: string): unknown {
  const stack: unknown[] = [];
  const memo = new Map<number, unknown>();
  const bad = (msg: string): never => {
    throw new UserError(`${msg} (pickle byte ${src.position})`, where);
  };
  const u32 = (): number => {
    const b = src.bytes(4);
    return (b[0]! | (b[1]! << 8) | (b[2]! << 16)) + b[3]! * 0x1000000;
  };
  const u64 = (): number => {
    const lo = u32();
    const hi = u32();
    if (hi > 0x1fffff) bad('length over 2^53');
    return hi * 0x100000000 + lo;
  };
  const text = (n: number): string => {
    try {
      return utf8.decode(src.bytes(n));
    } catch (e) {
      if (e instanceof UserError) throw e;
      return bad('string is not valid UTF-8');
    }
  };
  const pop = (): unknown => {
    if (stack.length === 0) bad('stack underflow: not a valid pickle');
    const v = stack.pop();
    if (v === MARK) bad('unexpected MARK: not a valid pickle');
    return v;
  };
  const top = (): unknown => {
    if (stack.length === 0 || stack[stack.length - 1] === MARK) bad('stack underflow: not a valid pickle');
    return stack[stack.length - 1];
  };
  const popMark = (): unknown[] => {
    const i = stack.lastIndexOf(MARK);
    if (i < 0) bad('no MARK on the stack: not a valid pickle');
    const items = stack.splice(i);
    items.shift();
    return items;
  };
  const push = (v: unknown): void => {
    if (stack.length >= MAX_STACK) bad('pickle stack too deep');
    stack.push(v);
  };
  const dictOf = (v: unknown): PyDict => (v instanceof PyDict ? v : bad('SETITEM on something that is not a dict'));
  const key = (k: unknown): unknown => (typeof k === 'string' || typeof k === 'number' || typeof k === 'bigint' || typeof k === 'boolean' || k === null ? k : bad('dict key is not a string or number'));
  const global = (module: string, name: string): PyGlobal => {
    if (!hooks.allowed(module, name))
      bad(`refusing global ${module}.${name}: a state dict needs only tensors, storages and OrderedDict (nothing was executed)`);
    return new PyGlobal(module, name);
  };
  const signedLong = (b: Uint8Array): bigint => {
    let v = 0n;
    for (let i = b.length - 1; i >= 0; i--) v = (v << 8n) | BigInt(b[i]!);
    if (b.length > 0 && b[b.length - 1]! & 0x80) v -= 1n << BigInt(8 * b.length);
    return v;
  };
  const smallest = (v: bigint): number | bigint => (v >= BigInt(Number.MIN_SAFE_INTEGER) && v <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(v) : v);

  for (;;) {
    const op = src.byte();
    switch (op) {
      case 0x80: // PROTO
        if (src.byte() > 5) bad('pickle protocol above 5');
        break;
      case 0x95: // FRAME (protocol 4): only a length hint
        u64();
        break;
      case 0x2e: // STOP
        return pop();
      case 0x28: // MARK
        push(MARK);
        break;
      case 0x30: // POP
        stack.length ? stack.pop() : bad('stack underflow');
        break;
      case 0x31: // POP_MARK
        popMark();
        break;
      case 0x32: // DUP
        push(top());
        break;
      case 0x4e: // NONE
        push(null);
        break;
      case 0x88: // NEWTRUE
        push(true);
        break;
      case 0x89: // NEWFALSE
        push(false);
        break;
      case 0x4b: // BININT1
        push(src.byte());
        break;
      case 0x4d: {
        // BININT2
        const b = src.bytes(2);
        push(b[0]! | (b[1]! << 8));
        break;
      }
      case 0x4a: {
        // BININT
        const b = src.bytes(4);
        push(b[0]! | (b[1]! << 8) | (b[2]! << 16) | (b[3]! << 24));
        break;
      }
      case 0x8a: // LONG1
        push(smallest(signedLong(src.bytes(src.byte()))));
        break;
      case 0x8b: {
        // LONG4
        const n = u32();
        if (n > 64) bad('integer too large for a state dict');
        push(smallest(signedLong(src.bytes(n))));
        break;
      }
      case 0x47: // BINFLOAT
        push(new DataView(src.bytes(8).slice().buffer).getFloat64(0, false));
        break;
      case 0x58: // BINUNICODE
        push(text(u32()));
        break;
      case 0x8c: // SHORT_BINUNICODE
        push(text(src.byte()));
        break;
      case 0x8d: // BINUNICODE8
        push(text(u64()));
        break;
      case 0x54: // BINSTRING
        push(text(u32()));
        break;
      case 0x55: // SHORT_BINSTRING
        push(text(src.byte()));
        break;
      case 0x42: // BINBYTES
        push(src.bytes(u32()).slice());
        break;
      case 0x43: // SHORT_BINBYTES
        push(src.bytes(src.byte()).slice());
        break;
      case 0x7d: // EMPTY_DICT
        push(new PyDict());
        break;
      case 0x5d: // EMPTY_LIST
        push([]);
        break;
      case 0x29: // EMPTY_TUPLE
        push(new PyTuple([]));
        break;
      case 0x74: // TUPLE
        push(new PyTuple(popMark()));
        break;
      case 0x85: // TUPLE1
        push(new PyTuple([pop()]));
        break;
      case 0x86: {
        // TUPLE2
        const b = pop();
        push(new PyTuple([pop(), b]));
        break;
      }
      case 0x87: {
        // TUPLE3
        const c = pop();
        const b = pop();
        push(new PyTuple([pop(), b, c]));
        break;
      }
      case 0x6c: // LIST
        push(popMark());
        break;
      case 0x64: {
        // DICT
        const items = popMark();
        if (items.length % 2) bad('DICT with an odd number of items');
        const d = new PyDict();
        for (let i = 0; i < items.length; i += 2) d.map.set(key(items[i]), items[i + 1]);
        push(d);
        break;
      }
      case 0x61: {
        // APPEND
        const v = pop();
        const l = top();
        Array.isArray(l) ? l.push(v) : bad('APPEND on something that is not a list');
        break;
      }
      case 0x65: {
        // APPENDS
        const items = popMark();
        const l = top();
        Array.isArray(l) ? l.push(...items) : bad('APPENDS on something that is not a list');
        break;
      }
      case 0x73: {
        // SETITEM
        const v = pop();
        const k = pop();
        dictOf(top()).map.set(key(k), v);
        break;
      }
      case 0x75: {
        // SETITEMS
        const items = popMark();
        if (items.length % 2) bad('SETITEMS with an odd number of items');
        const d = dictOf(top());
        for (let i = 0; i < items.length; i += 2) d.map.set(key(items[i]), items[i + 1]);
        break;
      }
      case 0x71: // BINPUT
        memo.set(src.byte(), top());
        break;
      case 0x72: // LONG_BINPUT
        memo.set(u32(), top());
        break;
      case 0x94: // MEMOIZE
        memo.set(memo.size, top());
        break;
      case 0x68: // BINGET
      case 0x6a: {
        // LONG_BINGET
        const i = op === 0x68 ? src.byte() : u32();
        if (!memo.has(i)) bad(`memo ${i} was never stored`);
        push(memo.get(i));
        break;
      }
      case 0x63: {
        // GLOBAL: "module\nname\n"
        const readLine = (): string => {
          const chars: number[] = [];
          for (let c = src.byte(); c !== 0x0a; c = src.byte()) {
            if (chars.length > 200) bad('GLOBAL name too long');
            chars.push(c);
          }
          return String.fromCharCode(...chars);
        };
        const module = readLine();
        push(global(module, readLine()));
        break;
      }
      case 0x93: {
        // STACK_GLOBAL
        const name = pop();
        const module = pop();
        if (typeof module !== 'string' || typeof name !== 'string') bad('STACK_GLOBAL needs two strings');
        push(global(module as string, name as string));
        break;
      }
      case 0x52: {
        // REDUCE
        const args = pop();
        const fn = pop();
        if (!(fn instanceof PyGlobal)) bad('REDUCE on something that is not an allowed global');
        if (!(args instanceof PyTuple)) bad('REDUCE arguments are not a tuple');
        push(hooks.reduce(fn as PyGlobal, (args as PyTuple).items));
        break;
      }
      case 0x62: {
        // BUILD: only an OrderedDict's instance state (state_dict()._metadata) is accepted, and dropped
        const state = pop();
        if (!(top() instanceof PyDict) || !(state instanceof PyDict)) bad('BUILD on something other than a dict');
        break;
      }
      case 0x51: // BINPERSID
        push(hooks.persistentLoad(pop()));
        break;
      default:
        bad(`unsupported pickle opcode 0x${op.toString(16).padStart(2, '0')} (not something torch.save writes for a state dict)`);
    }
  }
}
