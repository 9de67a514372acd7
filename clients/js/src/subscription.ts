/**
 * One subscription: its state, its position, its token, and the delivery
 * rule (core/src/client/subscription.rs): every publication once, in
 * offset order, or a `gap` event, never a silent hole.
 */
import { backoff, refreshDelay, ttlOf } from "./backoff";
import type { Wavecast } from "./client";
import { Emitter } from "./emitter";
import { UnauthorizedError, WavecastError } from "./errors";
import type { GapReason, Position, Publication, SubscribeOptions, SubscriptionEvents, SubscriptionState } from "./types";

export class Subscription extends Emitter<SubscriptionEvents> {
  /** Where the subscription stands. */
  state: SubscriptionState = "unsubscribed";
  /** @internal the last position delivered */ _pos?: Position;
  /** @internal */ _token?: string;
  /** @internal bumped whenever what is in flight becomes stale */ _inc = 0;
  /** @internal */ _attempt = 0;
  /** @internal retry timer, token refresh timer, the refresh in flight */ _timer: any;
  /** @internal */ _rt: any;
  /** @internal */ _rf?: object;
  /** @internal the last connect reply listed it */ _server = false;
  /** @internal the server has it, or a subscribe of it is on its way */ _on = false;

  /** @internal */
  constructor(
    /** @internal */ public _c: Wavecast,
    /** The channel. */
    readonly channel: string,
    /** @internal */ public _o: SubscribeOptions,
    /** @internal the application subscribed it */ public _client = true,
  ) {
    super();
    this._pos = _o.since && { ..._o.since };
    this._token = _o.token;
  }

  /** The last position delivered (store it; pass it back as `since` after a reload); null before the first. */
  position(): Position | null {
    return this._pos ? { ...this._pos } : null;
  }

  /** Ends the subscription. */
  unsubscribe(): void {
    const c = this._c,
      channel = this.channel;
    if (c._subs.get(channel) != this) return;
    c._subs.delete(channel);
    if (this._on && c.state == "connected") c._send({ unsubscribe: { channel } });
    this._end(0, "unsubscribe called");
  }

  /** @internal */
  _set(state: SubscriptionState): void {
    const previous = this.state;
    if (previous != state) {
      this.state = state;
      this._emit("state", { state, previous });
      if (state == "subscribing") this._emit(state, { channel: this.channel });
    }
  }

  /** @internal everything in flight or scheduled is stale */
  _quiet(): void {
    this._inc++;
    this._on = false;
    this._rf = undefined;
    clearTimeout(this._timer);
    clearTimeout(this._rt);
  }

  /** @internal the connection ended: waits to be restored */
  _reset(): void {
    this._quiet();
    this._set("subscribing");
  }

  /** @internal ended for good */
  _end(code: number, reason: string): void {
    this._quiet();
    this._set("unsubscribed");
    this._emit("unsubscribed", { channel: this.channel, code, reason });
  }

  /** @internal ends it because of `e` */
  _fail(e: Error, code: number): void {
    this._emit("error", e);
    if (this._c._subs.get(this.channel) == this) this._c._subs.delete(this.channel);
    this._end(code, e.message);
  }

  /** @internal getToken threw: true if that ended the subscription */
  _tokenFailed(e: any): boolean {
    if (e instanceof UnauthorizedError) return this._fail(e, 0), true;
    this._emit("error", e);
    return false;
  }

  /** @internal subscribes again after a backoff */
  _again(): void {
    const o = this._c._o,
      inc = this._inc;
    this._timer = setTimeout(
      () => inc == this._inc && this._subscribe(),
      backoff(this._attempt++, o.minReconnectDelay, o.maxReconnectDelay),
    );
  }

  /** @internal sends subscribe, with recover from the last position (and a token, fetched if needed) */
  async _subscribe(): Promise<void> {
    const c = this._c,
      o = this._o,
      channel = this.channel,
      inc = ++this._inc;
    this._on = true;
    this._set("subscribing");
    if (!this._token && o.getToken) {
      try {
        this._token = await o.getToken({ channel });
      } catch (e) {
        if (inc == this._inc && !this._tokenFailed(e)) this._again();
        return;
      }
    }
    if (inc != this._inc || c.state != "connected") return;
    c._send({ subscribe: { channel, recover: this._pos, token: this._token } }, (m) => m && inc == this._inc && this._settle(m, inc));
  }

  /** @internal the subscribe reply */
  _settle(m: any, inc: number): void {
    const e = m.error,
      r = m.subscribe,
      asked = this._pos;
    if (e) {
      this._on = false;
      const error = new WavecastError(e.code, e.message);
      if (e.code == 111 && this._o.getToken) this._token = undefined;
      else if (e.code != 100 && e.code != 108) return this._fail(error, e.code);
      // Expired (a new token next time), or the server cannot take it now.
      this._emit("error", error);
      return this._again();
    }
    this._attempt = 0;
    let gap: GapReason | undefined,
      pubs: Publication[] = [];
    if (asked) {
      pubs = r.publications || [];
      if (!r.recovered) gap = "not_recovered";
      // Recovered, but not exactly what follows the position: not trusted.
      else if (
        asked.epoch != r.epoch ||
        asked.offset + pubs.length != r.offset ||
        pubs.some((p, i) => p.offset != asked.offset + 1 + i)
      )
        gap = "bad_recovery";
      if (gap) pubs = [];
    }
    this._live(r.epoch, r.offset, pubs.length, !!asked && !gap, gap);
    for (const p of pubs) if (inc == this._inc) this._deliver(p);
    if (inc == this._inc) this._refreshIn(ttlOf(this._token));
  }

  /** @internal a server-side subscription's start, from the connect reply: the server recovers nothing for it */
  _settleServer(at: Position): void {
    const last = this._pos;
    const gap: GapReason | undefined =
      last &&
      (last.epoch != at.epoch
        ? "not_recovered"
        : last.offset < at.offset
          ? "missed"
          : last.offset > at.offset
            ? "bad_recovery"
            : undefined);
    this._quiet();
    this._on = true;
    this._live(at.epoch, at.offset, 0, !!last && !gap, gap);
  }

  /** @internal live from `offset - behind` (the publications to recover come next) */
  _live(epoch: string, offset: number, behind: number, recovered: boolean, gap?: GapReason): void {
    const channel = this.channel;
    this._pos = { epoch, offset: offset - behind };
    this._set("subscribed");
    this._emit("subscribed", { channel, epoch, offset, recovered });
    if (gap) this._emit("gap", { channel, epoch, offset, reason: gap });
  }

  /** @internal */
  _deliver(p: Publication): void {
    this._pos!.offset = p.offset;
    this._emit("publication", { channel: this.channel, offset: p.offset, data: p.data, info: p.info });
  }

  /** @internal a push for this channel */
  _push(p: any): void {
    const c = this._c,
      channel = this.channel,
      pos = this._pos,
      live = this.state == "subscribed",
      u = p.unsubscribe,
      who = p.join || p.leave;
    if (p.pub) {
      const o = p.pub.offset;
      // Not live (a push before the reply), or a duplicate: dropped.
      if (!live || !pos || o <= pos.offset) return;
      if (o == pos.offset + 1) return this._deliver(p.pub);
      // A hole the server did not announce: ask again from the last delivered.
      this._emit("error", new WavecastError(0, `offset ${o} on ${channel} where ${pos.offset + 1} was next`));
      c._send({ unsubscribe: { channel } });
      this._reset();
      this._subscribe();
    } else if (p.gap) {
      // The SSE stream could not fill a gap: it goes on from there.
      const { epoch, offset } = p.gap;
      if (live) (this._pos = { epoch, offset }), this._emit("gap", { channel, epoch, offset, reason: "not_recovered" });
    } else if (who) {
      if (live) this._emit(p.join ? "join" : "leave", { channel, info: who });
    } else if (u) {
      // With a subscribe on its way, the push is about the server's previous subscription.
      const replaced = !live && this._on;
      if (u.code < 2500 || u.code > 2999) {
        // 2000 by the server, 2001 permission revoked: stay unsubscribed.
        if (replaced) c._send({ unsubscribe: { channel } });
        c._subs.delete(channel);
        this._end(u.code, u.reason);
      } else if (!replaced) {
        // 2500 a gap the server could not fill, 2501 the token expired:
        // subscribe again with recover (and a new token).
        if (u.code == 2501) {
          if (!this._o.getToken) return this._fail(new WavecastError(u.code, u.reason), u.code);
          this._token = undefined;
        }
        this._reset();
        this._subscribe();
      }
    }
  }

  /** @internal sub_refresh at about 80% of `ttl` */
  _refreshIn(ttl?: number): void {
    const inc = this._inc;
    if (this._o.getToken && ttl != null) this._rt = setTimeout(() => this._refresh(inc), refreshDelay(ttl));
  }

  /** @internal one refresh in flight, tied to this subscription's life on this connection */
  async _refresh(inc: number): Promise<void> {
    const channel = this.channel;
    if (inc != this._inc || this._rf) return;
    const me = (this._rf = {});
    let token: string;
    try {
      token = await this._o.getToken!({ channel });
    } catch (e) {
      if (this._rf == me && !this._tokenFailed(e)) this._rf = undefined, this._refreshIn(2);
      return;
    }
    if (this._rf != me) return;
    this._rf = undefined;
    this._token = token;
    this._c._send({ sub_refresh: { channel, token } }, (m) => {
      const e = m?.error;
      if (!m || inc != this._inc) return;
      if (e) this._emit("error", new WavecastError(e.code, e.message));
      this._refreshIn(e ? 2 : m.sub_refresh.expires ? m.sub_refresh.ttl : undefined);
    });
  }
}
