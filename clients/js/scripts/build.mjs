// Builds dist/: index.mjs (ESM), index.cjs (CommonJS), wavecast.min.js (a
// script-tag bundle whose global `Wavecast` is the client class), and the
// type declarations (tsc). No runtime dependencies: everything is ours.
import { build } from "esbuild";
import { execFileSync } from "node:child_process";
import { rmSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
process.chdir(root);
rmSync("dist", { recursive: true, force: true });

const common = { bundle: true, target: "es2020", logLevel: "warning", legalComments: "none" };
await Promise.all([
  build({ ...common, entryPoints: ["src/index.ts"], format: "esm", outfile: "dist/index.mjs" }),
  build({ ...common, entryPoints: ["src/index.ts"], format: "cjs", outfile: "dist/index.cjs" }),
  build({
    ...common,
    entryPoints: ["src/browser.ts"],
    format: "iife",
    globalName: "Wavecast",
    footer: { js: "Wavecast=Wavecast.default;" },
    minify: true,
    // The client's internals (`_name`) are nobody's business: short names.
    mangleProps: /^_/,
    outfile: "dist/wavecast.min.js",
  }),
]);
// Declarations: one file per module, index.d.ts at the top.
execFileSync(process.execPath, [join(root, "node_modules/typescript/bin/tsc"), "-p", "tsconfig.json", "--outDir", "dist"], {
  stdio: "inherit",
});
