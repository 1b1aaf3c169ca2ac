#!/usr/bin/env bash
# Session creation rate on one core: wrk posts the Mottasl golden request
# (tests/fixtures/dialects/mottasl/request.json) to POST /v1/app/user.new.session over
# kept-alive connections; every answer must be 200.
#
#   benches/create_session.sh                  # memory store, 10 s, 50 connections
#   STORE=redis benches/create_session.sh      # a redis-server of its own, on a free port
#   DURATION=20 CONNS=100 benches/create_session.sh
#
# Layout as in ../shared/bench/run.sh: the gateway alone on CPU 0 with one worker thread,
# wrk (and redis-server, when used) on CPU 1. Creation rate limits are switched off in the
# copy of the config the gateway runs with (they would answer 429, which is their job, not
# what this measures). Needs `cargo build --release`; installs wrk (and redis-server) with
# apt when missing.
set -euo pipefail
cd "$(dirname "$0")/.."
STORE=${STORE:-memory}
DURATION=${DURATION:-10}
CONNS=${CONNS:-50}

need=()
command -v wrk >/dev/null 2>&1 || need+=(wrk)
[ "$STORE" = redis ] && { command -v redis-server >/dev/null 2>&1 || need+=(redis-server); }
if [ ${#need[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi
[ -x target/release/sessiongate ] || cargo build --release --quiet --bin sessiongate

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
PROXY=$(free_port); ADMIN=$(free_port); UP=$(free_port)
WORK=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; sleep 0.3; rm -rf "$WORK"; }
trap cleanup EXIT

sed -E -e 's/^(\s*threads\s*=\s*)[0-9]+/\11/' \
  -e 's/^(\s*create_per_ip\s*=\s*)[0-9]+/\10/' -e 's/^(\s*create_per_credential\s*=\s*)[0-9]+/\10/' \
  config/sessiongate.toml > "$WORK/gw.toml"
env_store=()
if [ "$STORE" = redis ]; then
  RPORT=$(free_port)
  taskset -c 1 redis-server --port "$RPORT" --bind 127.0.0.1 --save '' --appendonly no \
    --dir "$WORK" >"$WORK/redis.log" 2>&1 & pids+=($!)
  for _ in $(seq 100); do redis-cli -p "$RPORT" ping >/dev/null 2>&1 && break; sleep 0.1; done
  env_store=(SESSIONGATE_REDIS_URL="redis://127.0.0.1:$RPORT")
fi
env "${env_store[@]}" SESSIONGATE_LISTEN=127.0.0.1:$PROXY SESSIONGATE_ADMIN_LISTEN=127.0.0.1:$ADMIN \
  SESSIONGATE_UPSTREAM=http://127.0.0.1:$UP SESSIONGATE_THREADS=1 \
  taskset -c 0 ./target/release/sessiongate serve --config "$WORK/gw.toml" >"$WORK/gw.log" 2>&1 & pids+=($!)
for _ in $(seq 100); do curl -sf "127.0.0.1:$ADMIN/healthz" >/dev/null && break; sleep 0.1; done

BODY=$(python3 -c 'import json,sys; print(json.dumps(json.load(open(sys.argv[1])), separators=(",",":")))' \
  tests/fixtures/dialects/mottasl/request.json)
URL="http://127.0.0.1:$PROXY/v1/app/user.new.session"
code=$(curl -s -o "$WORK/first.json" -w '%{http_code}' -X POST "$URL" \
  -H 'Authorization: Bearer dev-mottasl-token' -H 'Content-Type: application/json' -d "$BODY")
[ "$code" = 200 ] || { echo "first creation answered $code: $(cat "$WORK/first.json")" >&2; exit 1; }

cat > "$WORK/post.lua" <<LUA
wrk.method = "POST"
wrk.body = [[$BODY]]
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer dev-mottasl-token"
LUA
echo "store: $STORE; wrk -t1 -c$CONNS -d${DURATION}s; gateway on CPU 0 (1 thread), wrk on CPU 1"
taskset -c 1 wrk -t1 -c"$CONNS" -d"${DURATION}s" --latency -s "$WORK/post.lua" "$URL" | tee "$WORK/wrk.txt" \
  | grep -E 'Requests/sec|Non-2xx|Socket errors|  50%|  99%'
if grep -q 'Non-2xx' "$WORK/wrk.txt"; then echo "FAILED: some creations were not 200" >&2; exit 1; fi
