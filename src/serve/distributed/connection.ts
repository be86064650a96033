/**
 * The Redis connection of the distributed queue: a `redis://` or `rediss://` (TLS) URL with an optional user,
 * password and database number, as ioredis reads it. The password is never printed: every message names the
 * server by `redactUrl`.
 */
import { Redis } from 'ioredis';
import { UserError, oneLine } from '../../util/errors.ts';

/** The BullMQ queue every `emosllm queue`/`worker` command uses (databases or servers separate archives). */
export const QUEUE_NAME = 'emosllm-predict';

/** The URL with its password (and user) replaced by `***`, for messages. */
export function redactUrl(url: string): string {
  try {
    const u = new URL(url);
    if (u.password) u.password = '***';
    if (u.username) u.username = '***';
    return u.toString();
  } catch {
    return '(unparsable URL)';
  }
}

/** Checks `url` is a redis:// or rediss:// URL (a one-line error otherwise, without the password). */
export function checkRedisUrl(url: string): void {
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    throw new UserError(`--queue must be a redis://HOST:PORT[/DB] or rediss:// URL, got ${redactUrl(url)}`);
  }
  if (u.protocol !== 'redis:' && u.protocol !== 'rediss:') throw new UserError(`--queue must be a redis:// or rediss:// URL, got ${u.protocol}//`);
  const db = u.pathname.replace(/^\//, '');
  if (db !== '' && !/^\d+$/.test(db)) throw new UserError(`--queue: the database must be a number (redis://HOST:PORT/DB), got "/${db}"`);
}

/**
 * A connection for BullMQ. Workers retry every command until Redis is back (BullMQ needs
 * maxRetriesPerRequest = null for them) and reconnect forever; the short-lived commands (add, status, ...)
 * give up after a few attempts so an unreachable server is an error, not a hang.
 */
export function openRedis(url: string, o: { persistent: boolean }): Redis {
  checkRedisUrl(url);
  const redis = new Redis(url, {
    maxRetriesPerRequest: o.persistent ? null : 2,
    retryStrategy: o.persistent ? (times) => Math.min(200 * times, 2000) : (times) => (times > 3 ? null : 200 * times),
    lazyConnect: true,
  });
  // ioredis reports connection problems as 'error' events; the commands see them as rejected promises
  redis.on('error', () => {});
  return redis;
}

/** Connects a short-lived client, turning a refused connection or a wrong password into one line. */
export async function connectRedis(url: string, o: { persistent?: boolean } = {}): Promise<Redis> {
  const redis = openRedis(url, { persistent: o.persistent ?? false });
  // the cause (refused, TLS certificate, DNS) comes as an 'error' event; the failed command only says "closed"
  let cause: unknown;
  const remember = (e: unknown) => (cause = e);
  redis.on('error', remember);
  try {
    await redis.connect();
    await redis.ping();
  } catch (e) {
    redis.disconnect();
    throw new UserError(`cannot reach Redis: ${oneLine(cause ?? e)}`, redactUrl(url));
  } finally {
    redis.off('error', remember);
  }
  return redis;
}
