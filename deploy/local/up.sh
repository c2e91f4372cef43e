#!/usr/bin/env bash
# The scaled-out shop on this machine, without containers: one process per
# service and replica (auth-1, catalog-1, catalog-2, orders-1, orders-2,
# search-1, search-2, notify-1, web-1, web-2) and Debian's nginx in front,
# against one PostgreSQL, NATS JetStream and Redis, as deploy/compose.yaml
# runs it in containers.
#
#   EMPORIUM_DATABASE_URL=postgres://… EMPORIUM_NATS_URL=nats://… \
#   EMPORIUM_REDIS_URL=redis://… deploy/local/up.sh
#
# Settings (environment):
#   EMPORIUM_DATABASE_URL, EMPORIUM_NATS_URL, EMPORIUM_REDIS_URL   required
#   EMPORIUM_S3_URL   an S3-compatible endpoint (path-style) for the pictures;
#                     unset: one local folder, $RUN_DIR/media, for every process
#   RUN_DIR           where pids, logs, data and secrets go (default ./run)
#   BASE_PORT         nginx's public server; the internal server is BASE_PORT+1,
#                     the processes BASE_PORT+10 … BASE_PORT+19 (default 8100)
#   EMPORIUM_BIN      the binary (default target/release/emporium, built if absent)
#   NGINX             nginx (default /usr/sbin/nginx)
#   SEED              `demo` (default): the demo shop, once; `none`: nothing
#   ADMIN_PASSWORD    admin@example.com's password (default: generated once
#                     into $RUN_DIR/admin-password)
#   READY_TIMEOUT_SECS  how long to wait for everything to be ready (default 180)
# Every other EMPORIUM_* variable reaches every process as it is.
#
# Pids go to $RUN_DIR/pids/<name>.pid, logs to $RUN_DIR/logs/<name>.log.
# The last line printed is the shop's public URL. deploy/local/down.sh stops it.
set -euo pipefail

say() { printf '%s\n' "$*"; }
die() { printf 'up.sh: %s\n' "$*" >&2; exit 1; }

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)

RUN_DIR=${RUN_DIR:-./run}
BASE_PORT=${BASE_PORT:-8100}
SEED=${SEED:-demo}
NGINX=${NGINX:-/usr/sbin/nginx}
READY_TIMEOUT_SECS=${READY_TIMEOUT_SECS:-180}

for var in EMPORIUM_DATABASE_URL EMPORIUM_NATS_URL EMPORIUM_REDIS_URL; do
  if [ -z "${!var:-}" ]; then
    die "$var is not set. Every process shares one PostgreSQL, NATS JetStream and Redis, e.g.
  EMPORIUM_DATABASE_URL=postgres://postgres@127.0.0.1:5432/emporium \\
  EMPORIUM_NATS_URL=nats://127.0.0.1:4222 EMPORIUM_REDIS_URL=redis://127.0.0.1:6379 $0"
  fi
done
case "$EMPORIUM_DATABASE_URL" in
  postgres://* | postgresql://*) ;;
  *) die "EMPORIUM_DATABASE_URL must be a PostgreSQL URL (postgres://…): the processes share one database" ;;
esac
case "$BASE_PORT" in
  '' | *[!0-9]*) die "BASE_PORT=$BASE_PORT is not a port number" ;;
esac
if [ "$BASE_PORT" -lt 1024 ] || [ "$BASE_PORT" -gt 65500 ]; then
  die "BASE_PORT=$BASE_PORT: use 1024 to 65500 (the processes take BASE_PORT+19 at most)"
fi
case "$SEED" in
  demo | none) ;;
  *) die "SEED=$SEED: say demo or none" ;;
esac
case "$READY_TIMEOUT_SECS" in
  '' | *[!0-9]*) die "READY_TIMEOUT_SECS=$READY_TIMEOUT_SECS is not a number of seconds" ;;
esac
[ -x "$NGINX" ] || die "no nginx at $NGINX: install Debian's (apt-get install nginx-light) or set NGINX"

if [ -z "${EMPORIUM_BIN:-}" ]; then
  EMPORIUM_BIN=$root/target/release/emporium
  if [ ! -x "$EMPORIUM_BIN" ]; then
    say "building $EMPORIUM_BIN (cargo build --release)"
    (cd "$root" && cargo build --release --locked -p emporium) || die "the build failed"
  fi
fi
[ -x "$EMPORIUM_BIN" ] || die "EMPORIUM_BIN=$EMPORIUM_BIN is not an executable file"
EMPORIUM_BIN=$(cd "$(dirname "$EMPORIUM_BIN")" && pwd)/$(basename "$EMPORIUM_BIN")

mkdir -p "$RUN_DIR"
RUN_DIR=$(cd "$RUN_DIR" && pwd)
case "$RUN_DIR" in
  *[[:space:]\;\"\'\$]*) die "RUN_DIR=$RUN_DIR: use a folder whose path has no spaces, quotes, \$ or ;" ;;
esac
mkdir -p "$RUN_DIR/pids" "$RUN_DIR/logs" "$RUN_DIR/data" "$RUN_DIR/nginx"

# The processes, each with its role and port.
NAMES=(auth-1 catalog-1 catalog-2 orders-1 orders-2 search-1 search-2 notify-1 web-1 web-2)
PUBLIC_PORT=$BASE_PORT
INTERNAL_PORT=$((BASE_PORT + 1))
role_of() { printf '%s' "${1%-*}"; }
port_of() {
  local i
  for i in "${!NAMES[@]}"; do
    if [ "${NAMES[$i]}" = "$1" ]; then
      printf '%s' $((BASE_PORT + 10 + i))
      return
    fi
  done
  return 1
}

# A pid of this topology that still runs (and is still ours).
alive() {
  local pid=$1
  kill -0 "$pid" 2>/dev/null || return 1
  if [ -r "/proc/$pid/cmdline" ]; then
    tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qE 'emporium|nginx' || return 1
  fi
}

running=()
for pidfile in "$RUN_DIR"/pids/*.pid; do
  [ -e "$pidfile" ] || continue
  pid=$(cat "$pidfile" 2>/dev/null || true)
  if [ -n "$pid" ] && alive "$pid"; then
    running+=("$(basename "$pidfile" .pid)")
  else
    rm -f "$pidfile"
  fi
done
if [ "${#running[@]}" -gt 0 ]; then
  die "a topology is running in $RUN_DIR (${running[*]}): stop it first with RUN_DIR=$RUN_DIR $here/down.sh"
fi

port_taken() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
for port in "$PUBLIC_PORT" "$INTERNAL_PORT" $(for n in "${NAMES[@]}"; do port_of "$n"; printf ' '; done); do
  if port_taken "$port"; then
    die "port $port on 127.0.0.1 is taken: stop what listens there or choose another BASE_PORT"
  fi
done

# The secrets, made once and kept (0600); values already in the
# environment win.
random_hex() { od -An -tx1 -N"$1" /dev/urandom | tr -d ' \n'; }
secrets=$RUN_DIR/secrets.env
if [ ! -s "$secrets" ]; then
  (
    umask 077
    {
      printf '# Made by deploy/local/up.sh; keep it: the database holds data sealed with these.\n'
      printf 'EMPORIUM_CATALOG_SERVICE_TOKEN=%s\n' "$(random_hex 32)"
      printf 'EMPORIUM_AUTH_SERVICE_TOKEN=%s\n' "$(random_hex 32)"
      printf 'EMPORIUM_HTTP_FORM_KEY=%s\n' "$(random_hex 32)"
      printf 'EMPORIUM_AUTH_KEY_ENCRYPTION_KEY=%s\n' "$(head -c 32 /dev/urandom | base64 | tr -d '\n')"
      printf 'EMPORIUM_NOTIFY_SIGNING_KEY=%s\n' "$(random_hex 32)"
    } >"$secrets.new"
    mv "$secrets.new" "$secrets"
  )
fi
chmod 600 "$secrets"
while IFS= read -r line; do
  name=${line%%=*}
  case "$name" in
    EMPORIUM_[A-Z0-9_]*) [ -n "${!name:-}" ] || export "$name=${line#*=}" ;;
  esac
done <"$secrets"

# What every process shares. The URLs between processes go through nginx's
# internal server, so every replica is reached.
export EMPORIUM_PUBLIC_URL=${EMPORIUM_PUBLIC_URL:-http://127.0.0.1:$PUBLIC_PORT}
export EMPORIUM_CATALOG_URL=http://127.0.0.1:$INTERNAL_PORT
export EMPORIUM_AUTH_URL=http://127.0.0.1:$INTERNAL_PORT
export EMPORIUM_AUTH_JWKS_URL=http://127.0.0.1:$INTERNAL_PORT/.well-known/jwks.json
export EMPORIUM_WEB_API_URL=http://127.0.0.1:$PUBLIC_PORT
export EMPORIUM_AUTH_TRUST_FORWARDED_FOR=true
# Ten processes with one service each: 10 x 5 connections at most.
export EMPORIUM_DATABASE_MAX_CONNECTIONS=${EMPORIUM_DATABASE_MAX_CONNECTIONS:-5}
if [ "$SEED" = demo ]; then
  # The demo takes test payments, as `serve --demo` does.
  export EMPORIUM_TEST_PAYMENTS=${EMPORIUM_TEST_PAYMENTS:-true}
fi
unset EMPORIUM_SERVICES EMPORIUM_BIND EMPORIUM_DATA_DIR

if [ -n "${EMPORIUM_S3_URL:-}" ]; then
  command -v curl >/dev/null || die "EMPORIUM_S3_URL is set, and making its bucket needs curl"
  export EMPORIUM_MEDIA_STORE=s3
  export EMPORIUM_MEDIA_S3_ENDPOINT=$EMPORIUM_S3_URL
  export EMPORIUM_MEDIA_S3_BUCKET=${EMPORIUM_MEDIA_S3_BUCKET:-emporium-media}
  export EMPORIUM_MEDIA_S3_REGION=${EMPORIUM_MEDIA_S3_REGION:-us-east-1}
  export EMPORIUM_MEDIA_S3_ACCESS_KEY_ID=${EMPORIUM_MEDIA_S3_ACCESS_KEY_ID:-test}
  export EMPORIUM_MEDIA_S3_SECRET_ACCESS_KEY=${EMPORIUM_MEDIA_S3_SECRET_ACCESS_KEY:-test}
  case "$EMPORIUM_S3_URL" in
    http://*) export EMPORIUM_MEDIA_S3_ALLOW_HTTP=true ;;
  esac
  status=$(curl -sS -o "$RUN_DIR/logs/bucket.log" -w '%{http_code}' -X PUT \
    --aws-sigv4 "aws:amz:$EMPORIUM_MEDIA_S3_REGION:s3" \
    --user "$EMPORIUM_MEDIA_S3_ACCESS_KEY_ID:$EMPORIUM_MEDIA_S3_SECRET_ACCESS_KEY" \
    "${EMPORIUM_S3_URL%/}/$EMPORIUM_MEDIA_S3_BUCKET") || die "cannot reach $EMPORIUM_S3_URL"
  case "$status" in
    200 | 409) ;;
    *) die "cannot make the bucket $EMPORIUM_MEDIA_S3_BUCKET at $EMPORIUM_S3_URL (HTTP $status): $(cat "$RUN_DIR/logs/bucket.log")" ;;
  esac
else
  # One folder for every process: a picture uploaded through one catalog
  # replica is served by the other.
  export EMPORIUM_MEDIA_STORE=local
  export EMPORIUM_MEDIA_DIR=$RUN_DIR/media
  mkdir -p "$EMPORIUM_MEDIA_DIR"
fi

# A one-shot command, its output in logs/<log>.log; on failure, its tail.
once() {
  local log=$RUN_DIR/logs/$1.log
  shift
  if ! (cd "$RUN_DIR" && EMPORIUM_DATA_DIR=$RUN_DIR/data/cli "$EMPORIUM_BIN" "$@") >>"$log" 2>&1 </dev/null; then
    printf 'up.sh: "emporium %s" failed; the end of %s:\n' "$*" "$log" >&2
    tail -n 30 "$log" >&2
    exit 1
  fi
}

say "migrating the databases"
mkdir -p "$RUN_DIR/data/cli"
once migrate migrate

if [ "$SEED" = demo ] && [ ! -e "$RUN_DIR/seeded-demo" ]; then
  say "loading the demo shop"
  once seed seed --demo
  touch "$RUN_DIR/seeded-demo"
fi

if [ ! -e "$RUN_DIR/admin-created" ]; then
  if [ -n "${ADMIN_PASSWORD:-}" ]; then
    password=$ADMIN_PASSWORD
  else
    if [ ! -s "$RUN_DIR/admin-password" ]; then
      (umask 077 && random_hex 16 >"$RUN_DIR/admin-password")
    fi
    password=$(cat "$RUN_DIR/admin-password")
  fi
  say "creating the admin admin@example.com"
  if (cd "$RUN_DIR" && printf '%s\n' "$password" |
    EMPORIUM_DATA_DIR=$RUN_DIR/data/cli "$EMPORIUM_BIN" users create --email admin@example.com --role admin --password-stdin) \
    >>"$RUN_DIR/logs/admin.log" 2>&1; then
    touch "$RUN_DIR/admin-created"
  elif grep -q 'an account with this email exists' "$RUN_DIR/logs/admin.log"; then
    say "admin@example.com exists already in this database: its password stays as it was"
    touch "$RUN_DIR/admin-created"
  else
    tail -n 30 "$RUN_DIR/logs/admin.log" >&2
    die "cannot create the admin"
  fi
fi

say "writing nginx's configuration"
upstreams=()
for role in auth catalog orders search notify web; do
  addrs=""
  for name in "${NAMES[@]}"; do
    if [ "$(role_of "$name")" = "$role" ]; then
      addrs="${addrs:+$addrs,}127.0.0.1:$(port_of "$name")"
    fi
  done
  upstreams+=(--upstream "$role=$addrs")
done
conf=$RUN_DIR/nginx/nginx.conf
once nginx-config deploy nginx --out "$conf" \
  --listen "127.0.0.1:$PUBLIC_PORT" --internal-listen "127.0.0.1:$INTERNAL_PORT" \
  --run-dir "$RUN_DIR/nginx" --pid-file "$RUN_DIR/pids/nginx.pid" --log-dir "$RUN_DIR/logs" \
  "${upstreams[@]}"
# Run as root, nginx's workers would switch to `nobody`: they run as the
# caller instead, as everything else here.
nginx_args=(-c "$conf" -p "$RUN_DIR/nginx" -e "$RUN_DIR/logs/nginx-error.log")
if [ "$(id -u)" = 0 ]; then
  nginx_args+=(-g "user $(id -un) $(id -gn);")
fi
"$NGINX" -t -q "${nginx_args[@]}" >>"$RUN_DIR/logs/nginx-error.log" 2>&1 ||
  { tail -n 20 "$RUN_DIR/logs/nginx-error.log" >&2; die "nginx refuses $conf"; }

say "starting the processes"
for name in "${NAMES[@]}"; do
  mkdir -p "$RUN_DIR/data/$name"
  (
    trap '' HUP
    cd "$RUN_DIR"
    EMPORIUM_SERVICES=$(role_of "$name") \
      EMPORIUM_BIND=127.0.0.1:$(port_of "$name") \
      EMPORIUM_DATA_DIR=$RUN_DIR/data/$name \
      exec "$EMPORIUM_BIN" serve
  ) >>"$RUN_DIR/logs/$name.log" 2>&1 </dev/null &
  printf '%s\n' "$!" >"$RUN_DIR/pids/$name.pid"
done
"$NGINX" "${nginx_args[@]}" >>"$RUN_DIR/logs/nginx-error.log" 2>&1 </dev/null ||
  { tail -n 20 "$RUN_DIR/logs/nginx-error.log" >&2; die "nginx did not start"; }

# Ready: every process's /readyz, then the shop through nginx.
fail() {
  local name=$1 why=$2 log=$RUN_DIR/logs/$1.log
  [ "$name" = nginx ] && log=$RUN_DIR/logs/nginx-error.log
  printf 'up.sh: %s %s; the end of %s:\n' "$name" "$why" "$log" >&2
  tail -n 40 "$log" >&2
  printf 'up.sh: stopping what started\n' >&2
  RUN_DIR=$RUN_DIR GRACE_SECS=10 "$here/down.sh" >&2 || true
  exit 1
}
deadline=$((SECONDS + READY_TIMEOUT_SECS))
say "waiting until every process is ready (up to ${READY_TIMEOUT_SECS}s)"
checks=()
for name in "${NAMES[@]}"; do
  checks+=("$name http://127.0.0.1:$(port_of "$name")/readyz")
done
# Through nginx: the API (catalog), and the storefront's home (web, calling the API).
checks+=("nginx http://127.0.0.1:$PUBLIC_PORT/api/v1/products?limit=1" "nginx http://127.0.0.1:$PUBLIC_PORT/")
for check in "${checks[@]}"; do
  name=${check%% *}
  url=${check#* }
  until "$EMPORIUM_BIN" health --url "$url" >/dev/null 2>"$RUN_DIR/logs/health.log"; do
    pid=$(cat "$RUN_DIR/pids/$name.pid" 2>/dev/null || true)
    if [ -z "$pid" ] || ! alive "$pid"; then
      fail "$name" "stopped"
    fi
    if [ "$SECONDS" -ge "$deadline" ]; then
      fail "$name" "is not ready after ${READY_TIMEOUT_SECS}s ($(tail -n 1 "$RUN_DIR/logs/health.log"))"
    fi
    sleep 0.5
  done
done
rm -f "$RUN_DIR/logs/health.log"

say "ready: ${NAMES[*]} and nginx (pids in $RUN_DIR/pids, logs in $RUN_DIR/logs)"
say "internal server (catalog.url, auth.url): http://127.0.0.1:$INTERNAL_PORT"
if [ -s "$RUN_DIR/admin-password" ] && [ -z "${ADMIN_PASSWORD:-}" ]; then
  say "console: $EMPORIUM_PUBLIC_URL/admin as admin@example.com, password in $RUN_DIR/admin-password"
fi
say "stop: RUN_DIR=$RUN_DIR $here/down.sh"
say "$EMPORIUM_PUBLIC_URL"
