/**
 * Why a call, a subscription or a connection failed. `code` is the
 * server's error code (100-399 wavecast's, 400-1999 the application
 * backend's, docs/PROTOCOL.md "Errors"), or one of the client's own:
 * {@link TIMEOUT}, {@link DISCONNECTED}, {@link QUEUE_FULL}.
 */
export class WavecastError extends Error {
  constructor(
    /** The error code. */
    public code: number,
    message: string,
  ) {
    super(message);
    this.name = "WavecastError";
  }
}

/** A call got no reply within `timeout` (it may still have been applied). */
export const TIMEOUT = 1;
/** The connection ended before the reply came (the call may or may not have been applied). */
export const DISCONNECTED = 2;
/** Too many calls already wait for a connection. */
export const QUEUE_FULL = 3;

/**
 * Thrown by an application's `getToken` to say that the user has no
 * credentials (logged out, banned): the client stops reconnecting, reports
 * it as an `error` event and goes `disconnected`.
 */
export class UnauthorizedError extends Error {
  constructor(message = "unauthorized") {
    super(message);
    this.name = "UnauthorizedError";
  }
}
