/** A place in a channel's stream: store it, pass it back as `since`. */
export interface Position {
  /** The channel's epoch (changes when its history is lost). */
  epoch: string;
  /** The offset of the last publication (0: before the first). */
  offset: number;
}

/** Who a client is, as presence, `join`, `leave` and a publication's sender show it. */
export interface ClientInfo {
  client: string;
  user: string;
  conn_info?: unknown;
  chan_info?: unknown;
}

/** One publication. */
export interface Publication {
  offset: number;
  data: unknown;
  /** Its sender (absent for publications through the HTTP API). */
  info?: ClientInfo;
}

export type ClientState = "disconnected" | "connecting" | "connected";
export type SubscriptionState = "unsubscribed" | "subscribing" | "subscribed";
export type TransportName = "websocket" | "sse";

/**
 * Why publications may have been missed:
 * - `not_recovered`: the server could not continue from the last position
 *   (another epoch, or history moved past it);
 * - `bad_recovery`: a recovery that did not continue the position;
 * - `missed`: a server-side subscription came back further on (read
 *   `history` since the old position to fill it).
 */
export type GapReason = "not_recovered" | "bad_recovery" | "missed";

export interface Options {
  /** The connection token (a JWT), sent in `connect`. */
  token?: string;
  /**
   * Gets a connection token: called when one is needed (no token, or the
   * server said it expired) and at about 80% of its lifetime. Throw an
   * {@link UnauthorizedError} to stop the client.
   */
  getToken?: () => Promise<string>;
  /** The first reconnect delay's upper bound, ms (default 500). */
  minReconnectDelay?: number;
  /** No reconnect delay is longer, ms (default 20000). */
  maxReconnectDelay?: number;
  /** How long a call (publish, history, presence) waits, ms (default 5000). */
  timeout?: number;
  /** The transports to try, in order (default `["websocket", "sse"]`). */
  transports?: TransportName[];
  /** The SSE endpoint (default: `url` with http(s) and `/sse` for `/ws`). */
  sseUrl?: string;
  /** Where HTTP commands go over SSE (default: `url`'s origin over http(s)). */
  httpUrl?: string;
  /** A WebSocket implementation, outside browsers (e.g. the `ws` package). */
  WebSocket?: unknown;
}

export interface SubscribeOptions {
  /** A subscription token, for a namespace that asks for one. */
  token?: string;
  /** Gets a subscription token: when one is needed and before it expires. */
  getToken?: (context: { channel: string }) => Promise<string>;
  /** Recover what was published after this position first (one stored before a page reload). */
  since?: Position;
}

export interface ClientEvents {
  state: { state: ClientState; previous: ClientState };
  connecting: { transport: TransportName; attempt: number };
  connected: { client: string; user: string; transport: TransportName; data?: unknown };
  disconnected: { code: number; reason: string; reconnect: boolean };
  error: Error;
}

export interface SubscriptionEvents {
  state: { state: SubscriptionState; previous: SubscriptionState };
  subscribing: { channel: string };
  subscribed: { channel: string; epoch: string; offset: number; recovered: boolean };
  publication: { channel: string; offset: number; data: unknown; info?: ClientInfo };
  join: { channel: string; info: ClientInfo };
  leave: { channel: string; info: ClientInfo };
  gap: { channel: string; epoch: string; offset: number; reason: GapReason };
  unsubscribed: { channel: string; code: number; reason: string };
  error: Error;
}

export interface HistoryOptions {
  /** Publications after this position. */
  since?: Position;
  /** At most this many. */
  limit?: number;
  /** Newest first. */
  reverse?: boolean;
}

export interface HistoryResult {
  epoch: string;
  offset: number;
  publications: Publication[];
}

export interface PresenceResult {
  clients: { [client: string]: ClientInfo };
}
