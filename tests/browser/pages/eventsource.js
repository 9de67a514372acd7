// A page that uses no SDK: `new EventSource("/sse?channel=...")`, as in
// docs/PROTOCOL.md "Server-Sent Events". The browser reconnects by itself
// and sends Last-Event-ID; everything seen is recorded in `window.es`.
(() => {
  const channel = new URLSearchParams(location.search).get("channel");
  const $ = (id) => document.getElementById(id);
  const rec = (window.es = { log: [], opens: [], closes: [], errors: 0 });
  const lines = [];
  const show = (s) => {
    lines.push(s);
    if (lines.length > 14) lines.shift();
    $("log").textContent = lines.join("\n");
  };
  $("channel").textContent = channel;
  const es = (rec.source = new EventSource("/sse?channel=" + encodeURIComponent(channel)));
  // The server's `open` event shares its name with EventSource's own
  // `open` (the connection is up): only the server's has data.
  es.addEventListener("open", (e) => {
    if (e.data === undefined) return;
    const d = JSON.parse(e.data);
    rec.opens.push({ id: e.lastEventId, client: d.client, channels: d.channels, at: Date.now() });
    const c = d.channels[channel];
    rec.log.push({ t: "sub", epoch: c.epoch, offset: c.offset, recovered: c.recovered });
    $("opens").textContent = rec.opens.length;
    show(`open ${d.client} ${JSON.stringify(d.channels[channel])}`);
  });
  es.addEventListener("pub", (e) => {
    const p = JSON.parse(e.data);
    rec.log.push({ t: "pub", channel: p.channel, offset: p.offset, data: p.data, id: e.lastEventId });
    $("count").textContent = rec.log.filter((x) => x.t === "pub").length;
    $("id").textContent = e.lastEventId;
    if (p.offset % 10 === 0) show(`pub ${p.offset}`);
  });
  es.addEventListener("gap", (e) => {
    const g = JSON.parse(e.data);
    rec.log.push({ t: "gap", channel: g.channel, epoch: g.epoch, offset: g.offset, reason: g.reason });
    show(`gap ${e.data}`);
  });
  es.addEventListener("close", (e) => {
    rec.closes.push(JSON.parse(e.data));
    show(`close ${e.data}`);
  });
  es.addEventListener("error", () => {
    rec.errors++;
    show(`error (readyState ${es.readyState}): the browser reconnects`);
  });
})();
