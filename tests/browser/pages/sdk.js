// The page of the SDK scenarios: one subscription, everything it sees
// recorded in `window.wc` for the test to read. Query: channel=NAME,
// transports=websocket,sse (optional).
(() => {
  const q = new URLSearchParams(location.search);
  const channel = q.get("channel");
  const $ = (id) => document.getElementById(id);
  // `log`: the subscription's events in the order they came.
  const wc = (window.wc = { log: [], connected: [], disconnected: [], subscribed: [], errors: [], states: [] });
  const lines = [];
  const show = (s) => {
    lines.push(s);
    if (lines.length > 14) lines.shift();
    $("log").textContent = lines.join("\n");
  };
  $("channel").textContent = channel;

  const options = {};
  if (q.get("transports")) options.transports = q.get("transports").split(",");
  const url = (location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/ws";
  const client = (wc.client = new Wavecast(url, options));
  client.on("state", (e) => {
    wc.states.push(e.state);
    $("state").textContent = e.state;
  });
  client.on("connected", (e) => {
    wc.connected.push({ client: e.client, transport: e.transport, at: Date.now() });
    $("connections").textContent = wc.connected.map((c) => `${c.client} (${c.transport})`).join(", ");
    show(`connected ${e.client} over ${e.transport}`);
  });
  client.on("disconnected", (e) => {
    wc.disconnected.push({ code: e.code, reason: e.reason, reconnect: e.reconnect, at: Date.now() });
    show(`disconnected ${e.code} ${e.reason}`);
  });
  client.on("error", (e) => wc.errors.push("client: " + (e && e.message)));

  const sub = client.subscribe(channel);
  sub.on("subscribed", (e) => {
    wc.subscribed.push({ epoch: e.epoch, offset: e.offset, recovered: e.recovered });
    wc.log.push({ t: "sub", epoch: e.epoch, offset: e.offset, recovered: e.recovered });
    show(`subscribed at ${e.offset}${e.recovered ? " (recovered)" : ""}`);
  });
  sub.on("publication", (p) => {
    wc.log.push({ t: "pub", channel: p.channel, offset: p.offset, data: p.data });
    $("count").textContent = wc.log.filter((e) => e.t === "pub").length;
    if (p.offset % 25 === 0) show(`publication ${p.offset}`);
  });
  sub.on("gap", (g) => {
    wc.log.push({ t: "gap", channel: g.channel, epoch: g.epoch, offset: g.offset, reason: g.reason });
    $("gaps").textContent = wc.log.filter((e) => e.t === "gap").length;
    show(`gap: now at ${g.offset} (${g.reason})`);
  });
  sub.on("error", (e) => wc.errors.push("subscription: " + (e && e.message)));
  client.connect();
})();
