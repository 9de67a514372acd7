// The delivery contract, checked on what a page recorded: per channel,
// each offset once, in order, with no hole, unless a `gap` event said
// where the stream goes on from (docs/PROTOCOL.md "The delivery contract").

/**
 * `log`: the page's events in arrival order, `{t: "pub", offset, data}` or
 * `{t: "gap", offset, epoch, reason}`. The test published `{i}` for i in
 * 1..n on a fresh channel, so offset i carries i (one epoch throughout).
 * Returns `{problems, gaps, missing, seen}`: `problems` empty when the
 * contract held; `missing` the i that did not arrive, each of them
 * covered by a gap event (else it is a problem).
 */
export function check(log, n) {
  const problems = [];
  const gaps = log.filter((e) => e.t === "gap");
  const covered = new Set();
  let last = 0;
  const seen = new Set();
  for (const e of log) {
    if (e.t === "gap") {
      for (let k = last + 1; k <= e.offset; k++) covered.add(k);
      last = e.offset;
      continue;
    }
    if (e.t !== "pub") continue;
    if (seen.has(e.offset)) problems.push(`offset ${e.offset} delivered again (after ${last})`);
    else if (e.offset !== last + 1) problems.push(`offset ${e.offset} after ${last}, with no gap event between`);
    if (!e.data || e.data.i !== e.offset) problems.push(`offset ${e.offset} carries ${JSON.stringify(e.data)}`);
    seen.add(e.offset);
    last = Math.max(last, e.offset);
  }
  const missing = [];
  for (let i = 1; i <= n; i++) if (!seen.has(i)) missing.push(i);
  const silent = missing.filter((i) => !covered.has(i));
  if (silent.length) problems.push(`never delivered and no gap event for them: ${ranges(silent)}`);
  const extra = [...seen].filter((o) => o < 1 || o > n);
  if (extra.length) problems.push(`offsets nobody published: ${ranges(extra)}`);
  return { problems, gaps, missing, seen: seen.size };
}

/** `[1,2,3,7]` -> `"1-3, 7"`. */
export function ranges(xs) {
  const s = [...xs].sort((a, b) => a - b);
  const out = [];
  for (let i = 0; i < s.length; ) {
    let j = i;
    while (j + 1 < s.length && s[j + 1] === s[j] + 1) j++;
    out.push(i === j ? `${s[i]}` : `${s[i]}-${s[j]}`);
    i = j + 1;
  }
  return out.join(", ");
}

/**
 * Publishes `{i}` for i in 1..n through `server`'s HTTP API, one every
 * `every` ms (a steady rate: each waits for its slot and for the previous
 * answer), checking each got offset i. `at(i)` runs after publication i
 * (e.g. kills a server); it is not awaited, its promise is returned in
 * the list.
 */
export async function publishSteadily(server, channel, n, every, at = () => {}) {
  const start = Date.now();
  const side = [];
  for (let i = 1; i <= n; i++) {
    const wait = start + (i - 1) * every - Date.now();
    if (wait > 0) await new Promise((r) => setTimeout(r, wait));
    const r = await server.publish(channel, { i });
    if (r.offset !== i) throw new Error(`publication ${i} on ${channel} got offset ${r.offset}`);
    const p = at(i);
    if (p) side.push(p);
  }
  return Promise.all(side);
}

/**
 * The contract where epochs may change (a Redis restart without
 * persistence loses the streams): `acked` maps "epoch/offset" to the data
 * the API acknowledged there, `unacked` holds the data of attempts whose
 * answer was an error (they may still have been sequenced). Checks that,
 * per epoch, publications come once, in order, with no hole unless a gap
 * event says where the stream goes on from; that each carries what was
 * published at its position; and that everything acknowledged after the
 * last (re)start point in the final epoch arrived. Returns
 * `{problems, gaps, epochs}`.
 */
export function checkAcked(log, acked, unacked) {
  const problems = [];
  const gaps = [];
  const unackedJson = new Set(unacked.map((d) => JSON.stringify(d)));
  const got = new Map();
  let epoch, offset, start;
  const epochs = new Set();
  for (const e of log) {
    if (e.t === "sub" && epoch === undefined) {
      (epoch = e.epoch), (offset = start = e.offset), epochs.add(epoch);
    } else if (e.t === "gap") {
      gaps.push(e);
      (epoch = e.epoch), (offset = start = e.offset), epochs.add(epoch);
    } else if (e.t === "pub") {
      if (epoch === undefined) problems.push(`publication ${e.offset} before the subscribe`);
      if (e.offset !== offset + 1) problems.push(`offset ${e.offset} after ${offset} in epoch ${epoch}, with no gap event between`);
      const key = `${epoch}/${e.offset}`;
      if (got.has(key)) problems.push(`${key} delivered again`);
      got.set(key, e.data);
      const want = acked.get(key);
      if (want !== undefined ? JSON.stringify(want) !== JSON.stringify(e.data) : !unackedJson.has(JSON.stringify(e.data)))
        problems.push(`${key} carries ${JSON.stringify(e.data)}, published there: ${JSON.stringify(want)}`);
      offset = e.offset;
    }
  }
  const last = [...acked.keys()].pop()?.split("/")[0];
  if (epoch !== last) problems.push(`the page follows epoch ${epoch}, the last publication is in ${last}`);
  const silent = [];
  for (const [key] of acked) {
    const [ep, off] = key.split("/");
    if (ep === epoch && Number(off) > start && !got.has(key)) silent.push(Number(off));
  }
  if (silent.length) problems.push(`acknowledged in epoch ${epoch} after ${start} and never delivered: ${ranges(silent)}`);
  return { problems, gaps, epochs };
}
