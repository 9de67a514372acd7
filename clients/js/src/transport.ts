/**
 * The client speaks the WebSocket protocol's messages (docs/PROTOCOL.md)
 * to a transport: commands out, replies and pushes in. The WebSocket
 * transport carries them as they are; the SSE transport (sse.ts) plays
 * the same part over an event stream and HTTP requests.
 */

/** What a transport tells the client. */
export interface Handler {
  /** The transport is up: the client sends `connect`. */
  open(): void;
  /** One reply or push. */
  message(m: any): void;
  /** It ended (or could not be opened: then without `open` first). */
  close(code: number, reason: string): void;
}

/** What the client asks of a transport. */
export interface Transport {
  /** One command (`{id, NAME: BODY}`). */
  send(m: any): void;
  /** Ends it; nothing more is reported. */
  close(): void;
}

export interface TransportContext {
  url: string;
  sseUrl: string;
  httpUrl: string;
  WebSocket?: any;
  /** The application's subscriptions and their positions, for the SSE stream's first request. */
  channels(): [string, Position | undefined][];
}

export type TransportFactory = (c: TransportContext, h: Handler) => Transport;

import type { Position } from "./types";

const later = (f: () => void) => setTimeout(f, 0);

/** The WebSocket transport, JSON encoding. */
export const websocket: TransportFactory = (c, h) => {
  const WS = c.WebSocket || (globalThis as any).WebSocket;
  let s: any;
  try {
    s = new WS(c.url, "wavecast.json");
  } catch (e) {
    later(() => h.close(1006, "" + e));
    return { send() {}, close() {} };
  }
  // Kept set: the `ws` package throws an error event nobody listens to.
  s.onerror = () => {};
  s.onopen = () => h.open();
  s.onclose = (e: any) => h.close(e.code, e.reason);
  s.onmessage = (e: any) => {
    let m;
    try {
      m = JSON.parse(e.data);
    } catch {
      // The client closes the transport on hearing this.
      return h.close(1007, "a message from the server is not JSON");
    }
    h.message(m);
  };
  return {
    send: (m) => s.send(JSON.stringify(m)),
    close() {
      s.onclose = s.onmessage = s.onopen = null;
      try {
        s.close(1000);
      } catch {}
    },
  };
};
