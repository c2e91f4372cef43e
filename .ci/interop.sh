#!/usr/bin/env bash
# Verifies our tokens and TOTP codes with independent implementations
# (PyJWT, pyotp) against a real server.
set -euo pipefail
cd "$(dirname "$0")/.."

deps=.ci/.pydeps
if ! PYTHONPATH=$deps python3 -c 'import jwt, pyotp, cryptography' 2>/dev/null; then
  python3 -m pip install --quiet --disable-pip-version-check --target "$deps" 'pyjwt[crypto]>=2.8' 'pyotp>=2.9' \
    || { echo "interop: cannot install PyJWT and pyotp" >&2; exit 1; }
fi

data=$(mktemp -d)
out="$data/stdout"
cargo build --quiet -p emporium
EMPORIUM_LOG=warn target/debug/emporium serve --bind 127.0.0.1:0 --data-dir "$data" >"$out" 2>"$data/stderr" &
server=$!
trap 'kill -TERM $server 2>/dev/null || true; wait $server 2>/dev/null || true; rm -rf "$data"' EXIT
for _ in $(seq 1 100); do grep -q 'http://' "$out" 2>/dev/null && break; sleep 0.1; done
url=$(grep -o 'http://[0-9.:]*' "$out" | head -n 1)
[ -n "$url" ] || { echo "interop: the server did not start" >&2; cat "$data/stderr" >&2; exit 1; }
PYTHONPATH=$deps python3 tests/interop/auth_interop.py "$url"
