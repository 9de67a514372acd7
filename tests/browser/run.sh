#!/usr/bin/env bash
# The browser tests: Debian's chromium and firefox-esr, driven by
# puppeteer-core, against real wavecast servers behind nginx on Redis
# (tests/browser/README.md). Installs the npm packages if needed, builds
# the wavecast binary (unless WAVECAST_BIN is set) and clients/js's bundle
# when it is missing or older than its sources, then runs every
# tests/browser/*.test.mjs. Extra arguments go to `node --test`.
#   tests/browser/run.sh
#   BROWSERS=firefox tests/browser/run.sh --test-name-pattern='^A'
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"

missing=()
for cmd in node npm redis-server nginx; do command -v "$cmd" >/dev/null || missing+=("$cmd"); done
[[ -x ${CHROMIUM_BIN:-/usr/bin/chromium} ]] || missing+=(chromium)
[[ -x ${FIREFOX_BIN:-/usr/bin/firefox-esr} ]] || missing+=(firefox-esr)
if ((${#missing[@]})); then
  echo "tests/browser: missing ${missing[*]} (Debian: apt-get install -y nodejs npm redis-server nginx chromium firefox-esr)" >&2
  exit 1
fi

cd "$here"
if [[ ! -f node_modules/.package-lock.json || package-lock.json -nt node_modules/.package-lock.json ]]; then
  echo "==> tests/browser: npm ci"
  npm ci --no-audit --no-fund --loglevel=error
fi

if [[ -z ${WAVECAST_BIN:-} ]]; then
  echo "==> tests/browser: cargo build -p wavecast"
  (cd "$root" && cargo build -q -p wavecast)
fi

js="$root/clients/js"
if [[ -f $js/package.json ]]; then
  bundle="$js/dist/wavecast.min.js"
  if [[ ! -f $bundle ]] || [[ -n $(find "$js/src" "$js/package.json" -newer "$bundle" -print -quit) ]]; then
    echo "==> tests/browser: building clients/js"
    (cd "$js" && { [[ -d node_modules ]] || npm ci --no-audit --no-fund --loglevel=error; } && npm run --silent build)
  fi
else
  echo "==> tests/browser: no clients/js yet: the scenarios that need its bundle are skipped"
fi

# One file at a time (each starts its own servers and browsers); a bound on
# each test. Both flags exist from node 20.11 (older ones run without them).
flags=(--test-reporter=spec)
if node -e 'const [a, b] = process.versions.node.split(".").map(Number); process.exit(a > 20 || (a == 20 && b >= 11) ? 0 : 1)'; then
  flags+=(--test-concurrency=1 --test-timeout=120000)
fi
start=$(date +%s)
node --test "${flags[@]}" "$@" ./*.test.mjs
echo "==> tests/browser: $(($(date +%s) - start)) s"
