// A fake WebSocket the unit tests drive by hand, with node:test's fake
// timers (setTimeout and Date): nothing touches the network or the clock.
import { mock } from "node:test";
import assert from "node:assert/strict";
import { Wavecast } from "../../dist/index.mjs";

export class FakeWS {
  static all = [];
  constructor(url, protocol) {
    this.url = url;
    this.protocol = protocol;
    this.sent = [];
    this.closed = null;
    FakeWS.all.push(this);
  }
  send(s) {
    assert.equal(this.closed, null, "sent on a closed socket");
    this.sent.push(JSON.parse(s));
  }
  close(code) {
    this.closed = code ?? 1005;
  }
  // The server's side.
  open() {
    this.onopen?.({});
  }
  recv(m) {
    this.onmessage?.({ data: JSON.stringify(m) });
  }
  drop(code = 1006, reason = "") {
    this.onclose?.({ code, reason });
  }
  /** The commands sent with this name. */
  cmds(name) {
    return this.sent.filter((m) => name in m);
  }
  last(name) {
    const all = this.cmds(name);
    assert.ok(all.length, `no ${name} sent; sent: ${JSON.stringify(this.sent)}`);
    return all[all.length - 1];
  }
  /** Answers the last command `name` with `body` (or an error). */
  reply(name, body) {
    const { id } = this.last(name);
    this.recv(body && body.error ? { id, ...body } : { id, [name]: body });
  }
  push(channel, body) {
    this.recv({ push: { channel, ...body } });
  }
}

/** Lets promises and async functions run (setImmediate is not faked). */
export const flush = async (n = 3) => {
  for (let i = 0; i < n; i++) await new Promise((r) => setImmediate(r));
};

/** Advances the fake clock by `ms`, running what falls due, and lets promises settle. */
export const tick = async (ms) => {
  await flush();
  mock.timers.tick(ms);
  await flush();
};

export function setup() {
  FakeWS.all = [];
  mock.timers.enable({ apis: ["setTimeout", "Date"], now: 1_000_000 });
}

export function teardown() {
  mock.timers.reset();
  mock.restoreAll();
}

/** The newest socket. */
export const sock = () => FakeWS.all[FakeWS.all.length - 1];

/** Records a client's (or subscription's) events. */
export function record(emitter, names) {
  const log = [];
  for (const n of names) emitter.on(n, (e) => log.push([n, e]));
  return log;
}

/**
 * A client with the fake socket, connected (connect answered with `reply`;
 * pings every hour unless it says otherwise, so that the liveness check
 * stays out of tests that let hours pass).
 */
export async function connected(options = {}, reply = { client: "c1", user: "" }) {
  reply = { ping: 3600, ...reply };
  const c = new Wavecast("ws://127.0.0.1:1/ws", { WebSocket: FakeWS, transports: ["websocket"], ...options });
  c.connect();
  await flush();
  sock().open();
  sock().reply("connect", reply);
  await flush();
  assert.equal(c.state, "connected");
  return c;
}

/** A JWT-shaped token (unsigned: the fake server does not check) expiring in `ttl` s. */
export const jwt = (claims) =>
  ["e30", Buffer.from(JSON.stringify(claims)).toString("base64url"), "sig"].join(".");
