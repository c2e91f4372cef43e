#!/usr/bin/env bash
# Stops what deploy/local/up.sh started in RUN_DIR (default ./run): nginx
# and every process with a pid file in $RUN_DIR/pids. SIGTERM first (the
# processes finish their requests and flush their outboxes), SIGKILL for
# whatever still runs after GRACE_SECS (default 30). Data, logs and
# secrets stay; up.sh starts the same shop again.
set -euo pipefail

die() { printf 'down.sh: %s\n' "$*" >&2; exit 1; }

RUN_DIR=${RUN_DIR:-./run}
GRACE_SECS=${GRACE_SECS:-30}
case "$GRACE_SECS" in
  '' | *[!0-9]*) die "GRACE_SECS=$GRACE_SECS is not a number of seconds" ;;
esac
if [ ! -d "$RUN_DIR/pids" ]; then
  printf 'nothing runs in %s\n' "$RUN_DIR"
  exit 0
fi

# A pid that still runs and is still one of ours (not a reused number).
alive() {
  local pid=$1
  kill -0 "$pid" 2>/dev/null || return 1
  if [ -r "/proc/$pid/cmdline" ]; then
    tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qE 'emporium|nginx' || return 1
  fi
}

names=()
pids=()
for pidfile in "$RUN_DIR"/pids/*.pid; do
  [ -e "$pidfile" ] || continue
  pid=$(cat "$pidfile" 2>/dev/null || true)
  name=$(basename "$pidfile" .pid)
  case "$pid" in
    '' | *[!0-9]*) rm -f "$pidfile"; continue ;;
  esac
  if alive "$pid"; then
    names+=("$name")
    pids+=("$pid")
    kill -TERM "$pid" 2>/dev/null || true
  else
    rm -f "$pidfile"
  fi
done
if [ "${#pids[@]}" -eq 0 ]; then
  printf 'nothing runs in %s\n' "$RUN_DIR"
  exit 0
fi
printf 'stopping %s\n' "${names[*]}"

deadline=$((SECONDS + GRACE_SECS))
while :; do
  left=()
  for i in "${!pids[@]}"; do
    if alive "${pids[$i]}"; then left+=("$i"); fi
  done
  [ "${#left[@]}" -eq 0 ] && break
  if [ "$SECONDS" -ge "$deadline" ]; then
    for i in "${left[@]}"; do
      printf 'down.sh: %s did not stop within %ss: killing it\n' "${names[$i]}" "$GRACE_SECS" >&2
      kill -KILL "${pids[$i]}" 2>/dev/null || true
    done
    sleep 0.5
    break
  fi
  sleep 0.2
done
# nginx's workers end with their master; anything of ours still there is an error.
still=()
for i in "${!pids[@]}"; do
  if alive "${pids[$i]}"; then still+=("${names[$i]}"); fi
  rm -f "$RUN_DIR/pids/${names[$i]}.pid"
done
[ "${#still[@]}" -eq 0 ] || die "still running: ${still[*]}"
printf 'stopped\n'
