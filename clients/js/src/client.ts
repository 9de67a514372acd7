/**
 * The connection: states, reconnecting, tokens, liveness, calls. The
 * mirror of core/src/client/mod.rs (its states and names), with the
 * delivery rule in subscription.ts and the close-code table in backoff.ts.
 */
import { backoff, refreshDelay, shouldReconnect } from "./backoff";
import { Emitter } from "./emitter";
import { DISCONNECTED, QUEUE_FULL, TIMEOUT, UnauthorizedError, WavecastError } from "./errors";
import { sse } from "./sse";
import { Subscription } from "./subscription";
import { Transport, TransportContext, websocket } from "./transport";
import type {
  ClientEvents,
  ClientState,
  HistoryOptions,
  HistoryResult,
  Options,
  PresenceResult,
  SubscribeOptions,
  TransportName,
} from "./types";

/** Calls that may wait for a connection at once; more are refused at once. */
export const MAX_QUEUED = 100;
/** A connection that stayed up this long (ms) starts the backoff over. */
const STABLE = 5000;
/** A page hidden at least this long (ms) checks its connection when shown. */
const LONG_HIDDEN = 30000;
/** The heartbeat interval (s) when the connect reply names none. */
const PING = 25;
/** Silence tolerated past a heartbeat interval (s). */
const SLACK = 10;

interface Call {
  k: string;
  b: unknown;
  res: (v: any) => void;
  rej: (e: Error) => void;
  t?: any;
  id?: number;
}

const fail = (c: Call, code: number, message: string) => {
  clearTimeout(c.t);
  c.rej(new WavecastError(code, message));
};

export class Wavecast extends Emitter<ClientEvents> {
  /** Where the connection stands. */
  state: ClientState = "disconnected";
  /** @internal */ _o: Required<Pick<Options, "minReconnectDelay" | "maxReconnectDelay" | "timeout" | "transports">> &
    Options;
  /** @internal */ _x: TransportContext;
  /** @internal the connection token */ _token?: string;
  /** @internal the transport */ _t?: Transport;
  /** @internal bumped whenever a transport ends: stale callbacks compare it */ _gen = 0;
  /** @internal */ _id = 0;
  /** @internal reconnect attempts since a connection stayed up */ _attempt = 0;
  /** @internal the transport to try, the one that last worked, how many failed in this round */ _ti = 0;
  /** @internal */ _good = 0;
  /** @internal */ _tried = 0;
  /** @internal the reconnect (or connect retry) timer */ _timer: any;
  /** @internal liveness */ _lt: any;
  /** @internal */ _seen = 0;
  /** @internal */ _win = (PING + SLACK) * 1000;
  /** @internal the token refresh timer, and the refresh in flight */ _rt: any;
  /** @internal */ _rf?: object;
  /** @internal when the connection was accepted */ _up = 0;
  /** @internal the application wants a connection */ _wanted = false;
  /** @internal */ _hidden = 0;
  /** @internal */ _name?: TransportName;
  /** @internal replies awaited, by id (called with nothing when the connection ends first) */
  _reqs = new Map<number, (m?: any) => void>();
  /** @internal */ _subs = new Map<string, Subscription>();
  /** @internal calls waiting for a connection */ _q: Call[] = [];

  /**
   * @param url the WebSocket endpoint, e.g. `ws://127.0.0.1:8000/ws`
   */
  constructor(url: string, options: Options = {}) {
    super();
    this._o = {
      minReconnectDelay: 500,
      maxReconnectDelay: 20000,
      timeout: 5000,
      transports: ["websocket", "sse"],
      ...options,
    };
    this._token = options.token;
    const u = new URL(url);
    u.protocol = u.protocol.replace("ws", "http");
    u.search = u.hash = "";
    const path = u.pathname;
    this._x = {
      url,
      sseUrl: options.sseUrl || u.origin + path.replace(/\/ws$|\/?$/, "/sse"),
      httpUrl: options.httpUrl || u.origin + path.replace(/\/?ws$|\/$/, ""),
      WebSocket: options.WebSocket,
      channels: () => [...this._subs.values()].filter((s) => s._client).map((s) => [s.channel, s._pos]),
    };
  }

  /** Connects (and keeps reconnecting until `disconnect`, or a close that says not to). */
  connect(): void {
    if (this.state != "disconnected") return;
    this._wanted = true;
    this._attempt = 0;
    this._watch(1);
    this._set("connecting");
    this._open();
  }

  /** Ends the connection; subscriptions are kept for the next `connect`. */
  disconnect(): void {
    this._wanted = false;
    this._watch(0);
    this._drain();
    if (this.state != "disconnected") this._lose(1000, "disconnect called", false);
  }

  /**
   * Subscribes to `channel` (restored with recover on every reconnect
   * until `sub.unsubscribe()`). Throws if the channel is subscribed already.
   */
  subscribe(channel: string, options: SubscribeOptions = {}): Subscription {
    let s = this._subs.get(channel);
    if (s) {
      // The server subscribed it (the token's `channels`): it is the application's too now.
      if (s._client) throw new Error("already subscribed to " + channel);
      s._client = true;
      s._o = options;
      return s;
    }
    this._subs.set(channel, (s = new Subscription(this, channel, options)));
    s._set("subscribing");
    if (this.state == "connected") s._subscribe();
    return s;
  }

  /** The subscription of `channel` (the application's, or one the server made on connect). */
  getSubscription(channel: string): Subscription | undefined {
    return this._subs.get(channel);
  }

  /** Publishes `data`; resolves with `{offset}`. */
  publish(channel: string, data: unknown): Promise<{ offset: number }> {
    return this._call("publish", { channel, data });
  }

  /** Reads the channel's history: after `since`, at most `limit`, newest first with `reverse`. */
  history(channel: string, options: HistoryOptions = {}): Promise<HistoryResult> {
    return this._call("history", { channel, ...options, since: options.since || undefined });
  }

  /** Lists the channel's subscribers. */
  presence(channel: string): Promise<PresenceResult> {
    return this._call("presence", { channel });
  }

  /** @internal */
  _call(k: string, b: unknown): Promise<any> {
    return new Promise((res, rej) => {
      const c: Call = { k, b, res, rej };
      if (this.state == "connected") this._sendCall(c);
      else if (this._q.length < MAX_QUEUED) this._q.push(c);
      else return fail(c, QUEUE_FULL, "too many calls wait for a connection");
      c.t = setTimeout(() => {
        this._q = this._q.filter((x) => x != c);
        this._reqs.delete(c.id!);
        fail(c, TIMEOUT, "timeout");
      }, this._o.timeout);
    });
  }

  /** @internal */
  _sendCall(c: Call): void {
    c.id = this._send({ [c.k]: c.b }, (m) => {
      if (!m) fail(c, DISCONNECTED, "the connection ended before the reply");
      else if (m.error) fail(c, m.error.code, m.error.message);
      else clearTimeout(c.t), c.res(m[c.k]);
    });
  }

  /** @internal calls waiting for a connection fail: none is coming */
  _drain(): void {
    for (const c of this._q.splice(0)) fail(c, DISCONNECTED, "disconnected");
  }

  /** @internal sends one command; `h` gets its reply, or nothing if the connection ends first */
  _send(cmd: object, h: (m?: any) => void = () => {}): number {
    const id = ++this._id;
    this._reqs.set(id, h);
    this._t!.send({ id, ...cmd });
    return id;
  }

  /** @internal */
  _set(state: ClientState): void {
    const previous = this.state;
    if (previous != state) {
      this.state = state;
      this._emit("state", { state, previous });
    }
  }

  /** @internal opens the next transport (after getting a token, if none) */
  async _open(): Promise<void> {
    clearTimeout(this._timer);
    this._timer = 0;
    const gen = ++this._gen;
    if (!(await this._ensureToken(gen))) return;
    const name = (this._name = this._o.transports[this._ti]);
    let opened = false;
    this._emit("connecting", { transport: name, attempt: this._attempt });
    if (gen != this._gen) return;
    this._t = (name == "sse" ? sse : websocket)(this._x, {
      open: () => {
        if (gen != this._gen) return;
        opened = true;
        this._seen = Date.now();
        this._watchdog();
        this._connect();
      },
      message: (m) => gen == this._gen && this._message(m),
      close: (code, reason) => gen == this._gen && this._closed(code, reason, opened),
    });
  }

  /** @internal a token, if the application gives them and none is held; false if it is too late or failed */
  async _ensureToken(gen: number): Promise<boolean> {
    const get = this._o.getToken;
    if (!this._token && get) {
      try {
        this._token = await get();
      } catch (e) {
        if (gen == this._gen) this._tokenFailed(e);
        return false;
      }
    }
    return gen == this._gen;
  }

  /** @internal getToken threw: an UnauthorizedError stops the client, anything else is tried again later */
  _tokenFailed(e: any): void {
    if (e instanceof UnauthorizedError) return this._stop(e);
    this._emit("error", e);
    this._quiet();
    this._retry();
  }

  /** @internal stops for good, reporting why */
  _stop(e: Error): void {
    this._emit("error", e);
    this._token = undefined;
    this._wanted = false;
    this._lose(4503, "unauthorized", false);
  }

  /** @internal */
  _connect(): void {
    this._send({ connect: { token: this._token, ping: true } }, (m) => m && this._connected(m));
  }

  /** @internal the connect reply */
  _connected(m: any): void {
    const e = m.error,
      gen = this._gen;
    if (e) {
      this._emit("error", new WavecastError(e.code, e.message));
      // 112: the server closes with 4503.
      if (e.code == 112) return;
      if (e.code == 111) {
        if (!this._o.getToken) return this._stop(new UnauthorizedError("the token expired and there is no getToken"));
        this._token = undefined;
      }
      // 100, 108, an application's code: ask again on this transport.
      this._timer = setTimeout(
        async () => (await this._ensureToken(gen)) && this._connect(),
        this._delay(),
      );
      return;
    }
    const r = m.connect,
      subs = r.subs || {};
    this._good = this._ti;
    this._tried = 0;
    this._up = Date.now();
    if (r.ping) {
      this._win = (r.ping + SLACK) * 1000;
      clearTimeout(this._lt);
      this._watchdog();
    }
    this._set("connected");
    this._emit("connected", { client: r.client, user: r.user, transport: this._name!, data: r.data });
    if (gen != this._gen) return;
    if (r.expires) this._refreshIn(r.ttl, gen);
    for (const ch in subs) {
      let s = this._subs.get(ch);
      if (!s) this._subs.set(ch, (s = new Subscription(this, ch, {}, false)));
      s._server = true;
      s._settleServer(subs[ch]);
    }
    for (const [ch, s] of this._subs) {
      if (ch in subs) continue;
      s._server = false;
      // (One subscribed by a `connected` listener is on its way already.)
      if (s._client) !s._on && s._subscribe();
      else this._subs.delete(ch), s._end(2000, "no longer a server-side subscription");
    }
    for (const c of this._q.splice(0)) if (gen == this._gen) this._sendCall(c);
  }

  /** @internal one reply or push */
  _message(m: any): void {
    this._seen = Date.now();
    const h = this._reqs.get(m.id),
      p = m.push;
    if (h) this._reqs.delete(m.id), h(m);
    else if (p && p.channel) this._subs.get(p.channel)?._push(p);
    // Anything else (an application-level ping) is a sign of life, no more.
  }

  /** @internal the transport ended */
  _closed(code: number, reason: string, opened: boolean): void {
    const n = this._o.transports.length;
    if (!opened && ++this._tried < n) {
      // It could not be opened: the next transport, at once.
      this._quiet();
      this._ti = (this._ti + 1) % n;
      this._open();
      return;
    }
    this._tried = 0;
    this._ti = this._good;
    if (this.state == "connected" && Date.now() - this._up >= STABLE) this._attempt = 0;
    if (code == 4005) this._token = undefined;
    const again = this._wanted && shouldReconnect(code);
    this._lose(code, reason, again);
    // After a server shutdown, the first delay is spread over 5 s: a
    // restart does not bring every client back in the same instant.
    if (again) this._retry(code == 4000 ? Math.random() * 5000 : this._delay());
  }

  /** @internal the next backoff delay, counting the attempt */
  _delay(): number {
    return backoff(this._attempt++, this._o.minReconnectDelay, this._o.maxReconnectDelay);
  }

  /** @internal reconnects after `delay` */
  _retry(delay = this._delay()): void {
    this._timer = setTimeout(() => this._open(), delay);
  }

  /** @internal the connection is gone: calls in flight fail, subscriptions wait to be restored */
  _lose(code: number, reason: string, again: boolean): void {
    this._quiet();
    for (const s of this._subs.values()) s._reset();
    if (!again) {
      this._wanted = false;
      this._watch(0);
      this._drain();
    }
    this._set(again ? "connecting" : "disconnected");
    this._emit("disconnected", { code, reason, reconnect: again });
  }

  /** @internal ends the transport and everything tied to it, saying nothing */
  _quiet(): void {
    this._gen++;
    this._t?.close();
    this._t = undefined;
    clearTimeout(this._timer);
    clearTimeout(this._lt);
    clearTimeout(this._rt);
    this._timer = this._rf = undefined;
    const waiting = [...this._reqs.values()];
    this._reqs.clear();
    for (const h of waiting) h();
  }

  /** @internal a silence of a heartbeat interval plus 10 s is a dead connection */
  _watchdog = (): void => {
    const left = this._seen + this._win - Date.now();
    if (left > 0) this._lt = setTimeout(this._watchdog, left);
    else this._closed(1006, "no message from the server in " + this._win / 1000 + " s", true);
  };

  /** @internal refreshes the token at about 80% of `ttl`, on this connection only */
  _refreshIn(ttl: number, gen: number): void {
    if (this._o.getToken) this._rt = setTimeout(() => this._refresh(gen), refreshDelay(ttl));
  }

  /**
   * @internal One refresh in flight, tied to the connection that scheduled
   * it: one that resolves after the connection ended is dropped, the new
   * connection runs its own.
   */
  async _refresh(gen: number): Promise<void> {
    if (gen != this._gen || this._rf) return;
    const me = (this._rf = {});
    let token: string;
    try {
      token = await this._o.getToken!();
    } catch (e) {
      if (this._rf != me) return;
      this._rf = undefined;
      if (e instanceof UnauthorizedError) return this._stop(e);
      this._emit("error", e as Error);
      return this._refreshIn(2, gen);
    }
    if (this._rf != me) return;
    this._rf = undefined;
    this._token = token;
    this._send({ refresh: { token } }, (m) => {
      const e = m?.error;
      if (!m) return;
      if (e) this._emit("error", new WavecastError(e.code, e.message));
      // 112: the server closes with 4503.
      if (e ? e.code != 112 : m.refresh.expires) this._refreshIn(e ? 2 : m.refresh.ttl, gen);
    });
  }

  /** @internal browser events: `online`, and `visibilitychange` after a long hidden time */
  _watch(on: 0 | 1): void {
    const g: any = globalThis,
      m = on ? "addEventListener" : "removeEventListener";
    g[m]?.("online", this._wake);
    g.document?.[m]("visibilitychange", this._vis);
  }

  /** @internal reconnects now if waiting for a backoff */
  _wake = (): void => {
    if (this.state == "connecting" && !this._t && this._timer) {
      this._attempt = 0;
      this._open();
    }
  };

  /** @internal */
  _vis = (): void => {
    const now = Date.now(),
      hidden = this._hidden;
    if ((globalThis as any).document.hidden) this._hidden = now;
    else if (hidden && now - hidden >= LONG_HIDDEN) {
      this._hidden = 0;
      this._wake();
      if (this.state == "connected") clearTimeout(this._lt), this._watchdog();
    }
  };
}
