#!/usr/bin/env bash
# Installs what the console's browser tests (tests/console.rs ->
# tests/browser/console.test.mjs) need: Debian's chromium, Node.js with npm,
# and the locked npm dependencies (playwright-core only; it drives the system
# chromium and downloads no browser of its own). Idempotent: installs only
# what is missing. Progress goes to stderr; stdout carries KEY=VALUE lines for
# the test environment.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v chromium >/dev/null 2>&1 || [ -x /usr/bin/chromium ] || need+=(chromium)
command -v node >/dev/null 2>&1 || need+=(nodejs)
command -v npm >/dev/null 2>&1 || need+=(npm)
if [ "${#need[@]}" -gt 0 ]; then
  echo "setup-browser: apt-get install ${need[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update >&2
  apt-get install -y --no-install-recommends "${need[@]}" >&2
fi

echo "setup-browser: npm ci --prefix tests/browser" >&2
npm ci --prefix tests/browser --no-audit --no-fund >&2

echo "ONEWINDOW_CHROMIUM=$(command -v chromium || echo /usr/bin/chromium)"
