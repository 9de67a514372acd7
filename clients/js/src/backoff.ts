/**
 * When to reconnect: the mirror of core/src/client/reconnect.rs.
 */

/**
 * The delay before reconnect attempt `attempt` (0 for the first after a
 * connection was lost): a uniform pick in `[min/2, cap]`, `cap = min *
 * 2^attempt` capped at `max` (full jitter; the floor keeps a client from
 * spinning). `random` is in [0, 1).
 */
export function backoff(attempt: number, min: number, max: number, random = Math.random()): number {
  min = Math.min(min, max);
  const cap = Math.min(max, min * 2 ** Math.min(attempt, 31));
  return min / 2 + random * (cap - min / 2);
}

/**
 * Whether a connection that ended with close `code` should reconnect by
 * itself: docs/PROTOCOL.md "Close codes" (`close::should_reconnect`), and
 * like the Rust client, 4502 too (the table says not to reconnect until the
 * client sends `connect` first, and this client always does: a 4502 means
 * its `connect` waited too long).
 */
export function shouldReconnect(code: number): boolean {
  return code == 4502 || (code < 4500 || code > 4999) && ![1000, 1002, 1003, 1007, 1008, 1009, 1010].includes(code);
}

/** A delay at about 80% of a token's `ttl` seconds (75% to 85%, jittered), in ms. */
export const refreshDelay = (ttl: number): number => ttl * 1000 * (0.75 + Math.random() / 10);

/** Seconds until a JWT's `exp`, read from the token itself (undefined: none, or not a JWT). */
export const ttlOf = (token?: string): number | undefined => {
  try {
    const exp = JSON.parse(atob(token!.split(".")[1].replace(/-/g, "+").replace(/_/g, "/"))).exp;
    return exp && Math.round(exp - Date.now() / 1000);
  } catch {}
};
