/**
 * An error caused by the user's input (a file, a flag, a checkpoint): printed as one line, no stack.
 * `where` names the file / tensor / key at fault so the message can be acted on.
 */
export class UserError extends Error {
  constructor(message: string, readonly where?: string) {
    super(where ? `${where}: ${message}` : message);
    this.name = 'UserError';
  }
}

/** One line for any error: the message only (stack traces are for EMOSLLM_DEBUG=1). */
export function oneLine(err: unknown): string {
  const msg = err instanceof Error ? err.message : String(err);
  return msg.split('\n').map((s) => s.trim()).filter(Boolean).join(' | ');
}
