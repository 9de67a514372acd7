/**
 * The SSE transport, for where a WebSocket cannot be opened (a proxy that
 * refuses upgrades): `GET /sse` (docs/PROTOCOL.md "Server-Sent Events"),
 * read with fetch (so that it can send `Authorization` and see the
 * heartbeat comments), and HTTP requests for the calls.
 *
 * It plays the WebSocket's part for the client: it takes the same
 * commands and answers with the same replies and pushes.
 * - `connect`: opens the stream with the channels the client will
 *   restore (and their positions as `since`); the `open` event is the
 *   connect reply. With no channel, there is no stream to open: the reply
 *   comes at once.
 * - `subscribe` / `unsubscribe`: answered from the stream; a channel set
 *   that changes reopens the stream (once per tick) with every channel's
 *   position, so nothing is lost or repeated across the reopen.
 * - `pub`, `join`, `leave` events become pushes; a `gap` event is the
 *   reply of a resumed channel that could not be recovered, or, later, a
 *   `gap` push; a heartbeat comment is a sign of life.
 * - `publish`, `history`, `presence`: HTTP POSTs to `httpUrl` + CALL_PATH
 *   (docs/PROTOCOL.md "Calls over HTTP"), answered with the command's
 *   reply body, or `{error}`;
 * - `refresh`: the new token is used by the next stream, reopened at once;
 * - a refusal of the stream (4xx, 5xx) or its end becomes a close code.
 */
import { ttlOf } from "./backoff";
import type { Position } from "./types";
import type { TransportFactory } from "./transport";

/** Where the calls go: `POST {httpUrl}{CALL_PATH}{name}` with the command's body. */
export const CALL_PATH = "/sse/";

interface Chan {
  /** The position in the stream (or to resume from). */
  p?: Position;
  /** The subscribe waiting for its reply. */
  id?: number;
  /** Its subscribe was answered. */
  live?: boolean;
  /** The stream has it (its `open` came). */
  open?: boolean;
  /** Resumed but not recovered: the reply waits for the `gap` event. */
  gap?: boolean;
  /** Refused when the stream was opened: the subscribe's answer. */
  err?: any;
}

const noTokens = { code: 104, message: "subscription tokens need the WebSocket transport" };

/** A position's id entry (docs/PROTOCOL.md "Event ids"). */
const entry = (p?: Position) =>
  p ? encodeURIComponent(p.epoch).replace(/[!'()*.]/g, (c) => "%" + c.charCodeAt(0).toString(16).toUpperCase()) + "." + p.offset : "";

export const sse: TransportFactory = (x, h) => {
  const chans = new Map<string, Chan>();
  const queue: any[] = [];
  let token: string | undefined,
    connectId = 0,
    ended = false,
    delivering = false,
    stream = 0,
    abort: AbortController | undefined,
    reopen: any;

  /** Hands messages to the client one at a time, in order, even when it sends while handling one. */
  const deliver = (m: any) => {
    queue.push(m);
    if (delivering) return;
    delivering = true;
    while (queue.length && !ended) h.message(queue.shift());
    delivering = false;
  };
  const reply = (id: number, name: string, body: any) => deliver({ id, [name]: body });
  const refuse = (id: number, error: any) => deliver({ id, error });
  const end = (code: number, reason: string) => {
    if (!ended) close(), h.close(code, reason);
  };
  const close = () => {
    ended = true;
    abort?.abort();
    clearTimeout(reopen);
  };
  const auth = (): any => (token ? { Authorization: "Bearer " + token } : {});

  /** Answers the subscribes that the stream can answer now. */
  const answer = () => {
    for (const [channel, c] of chans)
      if (c.id && c.err) refuse(c.id, c.err), chans.delete(channel);
      else if (c.id && c.open && !c.gap) reply(c.id, "subscribe", { ...c.p, recovered: true, publications: [] }), (c.id = 0), (c.live = true);
  };

  /** (Re)opens the stream with every channel and its position. */
  const open = async (): Promise<unknown> => {
    abort?.abort();
    clearTimeout(reopen);
    const me = ++stream,
      q = new URLSearchParams(),
      streamed = [...chans].filter(([, c]) => !c.err),
      since = streamed.map(([, c]) => entry(c.p)).join(",");
    if (!streamed.length) {
      abort = undefined;
      return connectId && reply(connectId, "connect", { client: "", user: "", expires: !!ttlOf(token), ttl: ttlOf(token) }), (connectId = 0);
    }
    for (const [channel, c] of streamed) q.append("channel", channel), (c.open = c.gap = false);
    if (since.replace(/,/g, "")) q.append("since", since);
    const ac = (abort = new AbortController());
    let res: Response;
    try {
      res = await fetch(x.sseUrl + "?" + q, { headers: { Accept: "text/event-stream", ...auth() }, signal: ac.signal, cache: "no-store", credentials: "include" });
    } catch (e) {
      return me == stream && end(1006, "" + e);
    }
    if (me != stream || ended) return;
    if (!res.ok) {
      let e: any = {};
      try {
        e = (await res.json()).error || {};
      } catch {}
      if (me != stream || ended) return;
      const c = chans.get(e.channel);
      // One channel refused: its subscribe gets the error, the others go on.
      if (c) return (c.err = e), answer(), open();
      // 401: the token (expired: get a new one); 400: this client's fault; else try again later.
      const s = res.status;
      return end(s == 401 ? (e.code == 111 ? 4005 : 4503) : s == 400 ? 4500 : 1013, e.message || "the stream was refused: " + s);
    }
    const reader = res.body!.getReader(),
      text = new TextDecoder();
    let buf = "",
      closed: any;
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done || me != stream || ended) break;
        buf += text.decode(value, { stream: true });
        let i;
        while ((i = buf.indexOf("\n\n")) >= 0 && me == stream && !ended) {
          let name = "message",
            data = "";
          for (const line of buf.slice(0, i).split("\n")) {
            const k = line.indexOf(":"),
              f = line.slice(0, k),
              v = line.slice(k + 1).replace(/^ /, "");
            if (f == "event") name = v;
            else if (f == "data") data = v;
          }
          buf = buf.slice(i + 2);
          const d = data ? JSON.parse(data) : {},
            c = chans.get(d.channel),
            channel = d.channel;
          if (name == "open") {
            for (const ch in d.channels) {
              const o = d.channels[ch],
                c = chans.get(ch);
              if (c) (c.p = { epoch: o.epoch, offset: o.offset }), (c.open = true), (c.gap = o.recovered === false);
            }
            if (connectId) reply(connectId, "connect", { client: d.client, user: d.user, expires: d.expires, ttl: d.ttl }), (connectId = 0);
            answer();
          } else if (!c) {
            // A comment (the heartbeat), or an event of a channel gone since.
            if (name == "close") closed = d;
            else deliver({ push: { ping: {} } });
          } else if (name == "pub") {
            c.p!.offset = d.offset;
            deliver({ push: { channel, pub: { offset: d.offset, data: d.data, info: d.info } } });
          } else if (name == "gap") {
            c.p = { epoch: d.epoch, offset: d.offset };
            if (c.gap && c.id) reply(c.id, "subscribe", { ...c.p, recovered: false }), (c.id = 0), (c.live = true);
            else deliver({ push: { channel, gap: { ...c.p, reason: d.reason } } });
            c.gap = false;
          } else if (name == "join" || name == "leave") {
            delete d.channel;
            deliver({ push: { channel, [name]: d } });
          }
        }
      }
    } catch (e) {
      closed ||= { code: 1006, reason: "" + e };
    }
    if (me == stream) end(closed?.code || 1006, closed?.reason || "the stream ended");
  };
  const later = () => {
    clearTimeout(reopen);
    reopen = setTimeout(open, 0);
  };

  setTimeout(() => !ended && h.open(), 0);
  return {
    close,
    send(m: any) {
      const id = m.id,
        b = m.subscribe || m.unsubscribe || m.sub_refresh,
        channel = b?.channel,
        c = chans.get(channel);
      if (m.connect) {
        token = m.connect.token;
        connectId = id;
        for (const [channel, p] of x.channels()) chans.set(channel, { p });
        open();
      } else if (m.refresh) {
        token = m.refresh.token;
        reply(id, "refresh", { expires: !!ttlOf(token), ttl: ttlOf(token) });
        later();
      } else if (m.subscribe) {
        if (b.token) refuse(id, noTokens);
        else if (c && !c.live) (c.id = id), answer();
        else chans.set(channel, { p: b.recover, id }), later();
      } else if (m.unsubscribe) {
        chans.delete(channel);
        reply(id, "unsubscribe", {});
        later();
      } else if (m.sub_refresh) refuse(id, noTokens);
      else {
        const name = Object.keys(m).find((k) => k != "id")!;
        fetch(x.httpUrl + CALL_PATH + name, {
          method: "POST",
          headers: { "Content-Type": "application/json", ...auth() },
          body: JSON.stringify(m[name]),
          credentials: "include",
        })
          // A body that is not JSON (a proxy's error page) says its status.
          .then((r) => r.json().catch(() => ({ error: { code: 100, message: `HTTP ${r.status} from ${CALL_PATH}${name}` } })))
          .then(
            (r) => (r.error ? refuse(id, r.error) : reply(id, name, r)),
            (e) => refuse(id, { code: 100, message: "" + e }),
          );
      }
    },
  };
};
