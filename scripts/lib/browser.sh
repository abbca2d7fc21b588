# scripts/lib/browser.sh - what the dashboard's browser test needs: Debian's chromium (headless)
# and playwright-core, pinned by tests/dashboard/package-lock.json, in tests/dashboard/node_modules.
# Not part of the default steps (the services do not need a browser); scripts/test runs it.
# shellcheck shell=bash

BROWSER_DIR="$ROOT/tests/dashboard"
BROWSER_STAMP="$BROWSER_DIR/node_modules/.hopper-lock-sha256"

chromium_path() { command -v chromium || command -v chromium-browser || true; }

lock_sha() { sha256sum "$BROWSER_DIR/package-lock.json" | cut -d' ' -f1; }

browser_install_chromium() {
  [ -n "$(chromium_path)" ] && return 0
  if ! is_root || ! have apt-get; then
    die "chromium is not installed (apt-get install -y chromium, as root)"
  fi
  say "installing Debian's chromium with apt-get"
  export DEBIAN_FRONTEND=noninteractive
  if ! apt-get install -y -qq chromium >/dev/null 2>&1; then
    apt-get update -qq >/dev/null || true
    apt-get install -y -qq chromium >/dev/null || die "apt-get install chromium failed"
  fi
}

browser_up() {
  browser_install_chromium
  have node || die "node is not installed (the dashboard test runs playwright-core under Node.js)"
  if [ "$(cat "$BROWSER_STAMP" 2>/dev/null)" != "$(lock_sha)" ]; then
    say "npm ci in tests/dashboard (playwright-core; no browser download)"
    (cd "$BROWSER_DIR" && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund --loglevel=error >/dev/null) ||
      die "npm ci in tests/dashboard failed"
    lock_sha >"$BROWSER_STAMP"
  fi
}

browser_status() {
  local c; c=$(chromium_path)
  if [ -z "$c" ]; then echo "missing (chromium)"; return 1; fi
  if [ "$(cat "$BROWSER_STAMP" 2>/dev/null)" != "$(lock_sha)" ]; then echo "missing (playwright-core)"; return 1; fi
  echo "ready ($("$c" --version 2>/dev/null | head -1))"
}
