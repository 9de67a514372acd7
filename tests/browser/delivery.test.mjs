// The checkers of lib/delivery.mjs on made-up logs: they must catch every
// way the contract can break (no browser needed; milliseconds).
import assert from "node:assert/strict";
import { test } from "node:test";
import { check, checkAcked } from "./lib/delivery.mjs";

const pub = (offset, i = offset) => ({ t: "pub", offset, data: { i } });
const seq = (a, b) => Array.from({ length: b - a + 1 }, (_, k) => pub(a + k));

test("check: everything once, in order, passes", () => {
  assert.deepEqual(check(seq(1, 5), 5).problems, []);
});

test("check: a hole, a duplicate, a reordering, a wrong payload, a missing tail are each caught", () => {
  assert.match(check([...seq(1, 2), ...seq(4, 5)], 5).problems.join(), /offset 4 after 2.*never delivered.*3/);
  assert.match(check([...seq(1, 3), pub(3), ...seq(4, 5)], 5).problems.join(), /offset 3 delivered again/);
  assert.match(check([pub(1), pub(3), pub(2), pub(4)], 4).problems.join(), /offset 3 after 1/);
  assert.match(check([pub(1), pub(2, 7)], 2).problems.join(), /offset 2 carries/);
  assert.match(check(seq(1, 3), 5).problems.join(), /never delivered and no gap event for them: 4-5/);
});

test("check: a gap event covers what it skips, and only that", () => {
  const gap = { t: "gap", epoch: "e", offset: 3, reason: "not_recovered" };
  const r = check([...seq(1, 1), gap, ...seq(4, 5)], 5);
  assert.deepEqual(r.problems, []);
  assert.deepEqual(r.missing, [2, 3]);
  assert.match(check([...seq(1, 1), gap, ...seq(5, 5)], 5).problems.join(), /offset 5 after 3/);
});

test("checkAcked: epochs, gaps and acknowledged publications", () => {
  const acked = new Map([
    ["a/1", { i: 1 }],
    ["a/2", { i: 2 }],
    ["b/1", { i: 3 }],
    ["b/2", { i: 4 }],
  ]);
  const sub = { t: "sub", epoch: "a", offset: 0 };
  const p = (offset, i) => ({ t: "pub", offset, data: { i } });
  const gap = { t: "gap", epoch: "b", offset: 0, reason: "epoch changed" };
  assert.deepEqual(checkAcked([sub, p(1, 1), p(2, 2), gap, p(1, 3), p(2, 4)], acked, []).problems, []);
  // Lost in the old epoch but told: fine. Silent in the new one: caught.
  assert.deepEqual(checkAcked([sub, p(1, 1), gap, p(1, 3), p(2, 4)], acked, []).problems, []);
  assert.match(checkAcked([sub, p(1, 1), gap, p(2, 4)], acked, []).problems.join(), /offset 2 after 0 in epoch b/);
  assert.match(checkAcked([sub, p(1, 1), p(2, 2), p(1, 3)], acked, []).problems.join(), /offset 1 after 2 in epoch a/);
  assert.match(checkAcked([sub, p(1, 1), p(2, 9)], acked, []).problems.join(), /carries/);
  assert.match(checkAcked([sub, p(1, 1), p(2, 2), gap, p(1, 3)], acked, []).problems.join(), /never delivered: 2/);
  // An attempt whose answer was lost may be delivered.
  assert.deepEqual(checkAcked([sub, p(1, 1), p(2, 2), gap, p(1, 3), p(2, 4), p(3, 5)], acked, [{ i: 5 }]).problems, []);
  assert.match(checkAcked([sub, p(1, 1), p(2, 2), gap, p(1, 3), p(2, 4), p(3, 5)], acked, []).problems.join(), /b\/3 carries/);
});
