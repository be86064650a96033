import type * as z from 'zod';
import { UserError } from './errors.ts';

type Issue = z.core.$ZodIssue;

/** One issue as one line: the field's dotted path and what is wrong with it ("batchSize: too small: ..."). */
export function issueLine(issue: Issue): string {
  if (issue.code === 'unrecognized_keys') {
    const at = issue.path.length ? `${issue.path.join('.')}: ` : '';
    return `${at}unknown field${issue.keys.length > 1 ? 's' : ''} ${issue.keys.map((k) => `"${k}"`).join(', ')}`;
  }
  const message = issue.code === 'invalid_type' && issue.message.endsWith('received undefined') ? 'missing' : issue.message.split('\n')[0];
  return issue.path.length ? `${issue.path.join('.')}: ${message}` : message;
}

/**
 * `schema.parse(value)`, or a one-line UserError naming where the value came from (a file, or a flag chosen
 * from the failing field's path) and the first failing field.
 */
export function parseOrThrow<S extends z.ZodType>(schema: S, value: unknown, where: string | ((path: PropertyKey[]) => string | undefined)): z.output<S> {
  const r = schema.safeParse(value);
  if (r.success) return r.data;
  const issue = r.error.issues[0];
  throw new UserError(issueLine(issue), typeof where === 'string' ? where : where(issue.path));
}
