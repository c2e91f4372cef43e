#!/usr/bin/env bash
# Lighthouse and axe on the demo shop's storefront: home, a category, a
# product, search results, the cart and checkout (with an item in the cart).
# Fails unless Accessibility, Best Practices and SEO are 100 (SEO on the public
# pages only) and axe finds no violation; the failing audits are listed, and
# the full reports are kept in target/lighthouse/.
# Node packages (pinned in .ci/ux/package-lock.json) install into .ci/ux/node_modules.
set -euo pipefail
cd "$(dirname "$0")/.."

die() { printf '\nlighthouse: %s\n' "$*" >&2; exit 1; }

if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  command -v apt-get >/dev/null || die "node and npm are missing and there is no apt-get to install them"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm >/dev/null \
    || die "cannot install node and npm"
fi
node -e 'const [a, b] = process.versions.node.split(".").map(Number); process.exit(a > 18 || (a === 18 && b >= 20) ? 0 : 1)' \
  || die "Lighthouse 12 needs node 18.20 or newer (found $(node --version))"
export CHROME_PATH=${CHROME_PATH:-/usr/bin/chromium}
[ -x "$CHROME_PATH" ] || die "no Chromium at $CHROME_PATH (apt-get install chromium)"

# Installed again only when the lock changes, so later runs need no network.
ux=.ci/ux
stamp="$ux/node_modules/.emporium-lock"
if ! cmp -s "$ux/package-lock.json" "$stamp"; then
  (cd "$ux" && npm ci --no-audit --no-fund --loglevel=error) || die "npm ci in $ux failed"
  cp "$ux/package-lock.json" "$stamp"
fi

# The debug binary the test pass built (only relinked if anything changed).
cargo build --quiet -p emporium
bin=target/debug/emporium

data=$(mktemp -d)
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
url="http://127.0.0.1:$port"
EMPORIUM_LOG=warn "$bin" serve --demo --bind "127.0.0.1:$port" --data-dir "$data" >"$data/stdout" 2>"$data/stderr" &
server=$!
trap 'kill -TERM $server 2>/dev/null || true; wait $server 2>/dev/null || true; rm -rf "$data"' EXIT

ready=""
for _ in $(seq 1 240); do
  kill -0 "$server" 2>/dev/null || { cat "$data/stderr" >&2; die "the shop stopped before it was ready"; }
  if curl -fsS -o /dev/null "$url/readyz" 2>/dev/null; then ready=1; break; fi
  sleep 0.5
done
[ -n "$ready" ] || { cat "$data/stderr" >&2; die "the shop at $url was not ready after 120 s"; }

node "$ux/audit.mjs" "$url" target/lighthouse
