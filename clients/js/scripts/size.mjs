// The size budget: the JSON client (dist/wavecast.min.js) at most 8 KB
// (8192 bytes) minified and gzipped. Prints the figure; fails over it.
import { readFileSync } from "node:fs";
import { gzipSync } from "node:zlib";

const BUDGET = 8 * 1024;
const file = new URL("../dist/wavecast.min.js", import.meta.url);
const min = readFileSync(file);
const gz = gzipSync(min, { level: 9 }).length;
console.log(
  `dist/wavecast.min.js: ${min.length} B minified, ${gz} B min+gzip (${(gz / 1024).toFixed(2)} KB of the ${BUDGET / 1024} KB budget)`,
);
if (gz > BUDGET) {
  console.error(`over budget by ${gz - BUDGET} B`);
  process.exit(1);
}
