// The chat page: the script-tag bundle (global `Wavecast`) subscribed to
// one room. Tokens come from the backend (POST /token), messages go to it
// (POST /send: it publishes them through wavecast's HTTP API), and they
// come back to every tab as publications, each once, in order. On joining
// (and whenever the client reports a gap) the page shows the room's last
// 50 messages with one `history` call, newest first (`reverse: true`).
const $ = (id) => document.getElementById(id);
const messages = new Map(); // offset -> {user, text, at}
let config, client, sub, name, token, epoch;

async function getToken() {
  const r = await fetch("/token", { method: "POST", body: JSON.stringify({ name }) });
  const body = await r.json();
  // Refused: nothing will get better by retrying.
  if (r.status === 400 || r.status === 401) throw new Wavecast.UnauthorizedError(body.error);
  if (!r.ok) throw new Error(body.error);
  return (token = body.token);
}

function render() {
  const list = $("messages");
  const atBottom = list.scrollHeight - list.scrollTop - list.clientHeight < 40;
  list.replaceChildren(
    ...[...messages].sort((a, b) => a[0] - b[0]).map(([offset, m]) => {
      const li = document.createElement("li");
      li.dataset.offset = offset;
      if (m.user === name) li.className = "mine";
      const who = document.createElement("span");
      who.className = "user";
      who.textContent = m.user;
      const time = document.createElement("span");
      time.className = "time";
      time.textContent = new Date(m.at).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
      li.append(who, document.createTextNode(m.text), time);
      return li;
    }),
  );
  if (atBottom) list.scrollTop = list.scrollHeight;
}

/** The room's last 50 messages, merged with what has arrived live (the same offsets are the same messages). */
async function loadHistory() {
  const h = await client.history(config.room, { limit: 50, reverse: true });
  if (h.epoch !== epoch) messages.clear(), (epoch = h.epoch);
  for (const p of h.publications) messages.set(p.offset, p.data);
  render();
}

function setStatus(state) {
  $("status").className = "status " + state;
  $("status").textContent = state;
}

async function join(e) {
  e.preventDefault();
  name = $("name").value.trim();
  if (!name) return;
  $("name").disabled = $("join").querySelector("button").disabled = true;
  client = new Wavecast(config.url, { getToken });
  client.on("state", (e) => setStatus(e.state));
  client.on("error", (e) => console.warn("wavecast:", e.message));
  sub = client.subscribe(config.room);
  sub.on("subscribed", (e) => {
    // The first time, and whenever recovery was impossible: read the room again.
    if (!e.recovered || e.epoch !== epoch) loadHistory().catch((e) => console.warn("history:", e.message));
  });
  sub.on("publication", (p) => {
    messages.set(p.offset, p.data);
    render();
  });
  sub.on("gap", () => loadHistory().catch((e) => console.warn("history:", e.message)));
  client.connect();
  $("text").disabled = $("send").querySelector("button").disabled = false;
  $("text").placeholder = "Message #" + config.room.split(":")[1];
  $("text").focus();
}

async function send(e) {
  e.preventDefault();
  const text = $("text").value.trim();
  if (!text) return;
  $("text").value = "";
  const r = await fetch("/send", {
    method: "POST",
    headers: { Authorization: "Bearer " + (token || (await getToken())) },
    body: JSON.stringify({ text }),
  });
  // It shows up when wavecast delivers it, like everyone else's.
  if (!r.ok) console.warn("send:", (await r.json()).error);
}

(async () => {
  config = await (await fetch("/config")).json();
  $("room").textContent = "#" + config.room.split(":")[1];
  $("join").addEventListener("submit", join);
  $("send").addEventListener("submit", send);
  // For the browser test (tests/browser/chat.test.mjs): what the page shows.
  window.chat = {
    state: () => ({
      client: client?.state,
      subscription: sub?.state,
      messages: [...messages].sort((a, b) => a[0] - b[0]).map(([offset, m]) => ({ offset, user: m.user, text: m.text })),
    }),
  };
})();
