#!/usr/bin/env bash
# Instructions per proxied request, counted by valgrind's callgrind: the same figure for the
# same binary and load on a quiet or a busy machine (wall-clock rps on this 2-core box
# moves 10-40 % between runs), so small changes can be compared one against another.
#
#   benches/instructions.sh sessiongate [BIN]     # authenticated GET / (default BIN: the release build)
#   benches/instructions.sh public [BIN]          # the same gateway, a public route
#   benches/instructions.sh pingora [BIN]         # the bench's bare Pingora (BENCH_TARGET_DIR)
#   SECS=20 OUT=/tmp/cg benches/instructions.sh sessiongate
#
# The proxy runs under callgrind with instrumentation off; after a 3 s warm-up
# `callgrind_control -i on` counts the next SECS seconds of wrk -t1 -c10 load, then the
# profile is dumped to $OUT/<row>.out.1 (read it with callgrind_annotate) and the script
# prints instructions / requests. Kernel time is not counted: this measures the proxy's own
# user-space work (and the allocator's), which is what a code change moves.
set -euo pipefail
cd "$(dirname "$0")/.."
ROW=${1:-sessiongate}
BIN=${2:-}
SECS=${SECS:-10}
OUT=${OUT:-target/instructions}
BENCH_TARGET_DIR=${BENCH_TARGET_DIR:-/tmp/sessiongate-bench-target}
mkdir -p "$OUT"
need=()
command -v valgrind >/dev/null 2>&1 || need+=(valgrind)
command -v wrk >/dev/null 2>&1 || need+=(wrk)
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || need+=(nginx)
if [ ${#need[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
UP=$(free_port); PROXY=$(free_port); ADMIN=$(free_port)
WORK=$(mktemp -d); pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; sleep 1; rm -rf "$WORK"; }
trap cleanup EXIT
mkdir -p "$WORK/nginx"
sed -e "s#@@DIR@@#$WORK/nginx#g" -e "s#@@PORT@@#$UP#g" \
  ../shared/bench/conf/upstream-nginx.conf.tmpl > "$WORK/nginx/nginx.conf"
taskset -c 1 "$NGINX" -p "$WORK/nginx" -c "$WORK/nginx/nginx.conf" & pids+=($!)
rm -f "$OUT/$ROW.out" "$OUT/$ROW.out".*
VG=(valgrind --tool=callgrind --instr-atstart=no --dump-instr=no --callgrind-out-file="$OUT/$ROW.out")
case "$ROW" in
  pingora)
    BASELINE_LISTEN=127.0.0.1:$PROXY BASELINE_UPSTREAM=127.0.0.1:$UP BASELINE_THREADS=1 \
      taskset -c 0 "${VG[@]}" "${BIN:-$BENCH_TARGET_DIR/release/pingora-baseline}" >"$WORK/proxy.log" 2>&1 & pids+=($!) ;;
  sessiongate|public)
    sed -E 's/^(\s*threads\s*=\s*)[0-9]+/\11/' config/sessiongate.toml > "$WORK/gw.toml"
    SESSIONGATE_LISTEN=127.0.0.1:$PROXY SESSIONGATE_ADMIN_LISTEN=127.0.0.1:$ADMIN \
      SESSIONGATE_UPSTREAM=http://127.0.0.1:$UP SESSIONGATE_THREADS=1 \
      taskset -c 0 "${VG[@]}" "${BIN:-./target/release/sessiongate}" serve --config "$WORK/gw.toml" >"$WORK/proxy.log" 2>&1 & pids+=($!) ;;
  *) echo "usage: $0 sessiongate|public|pingora [BIN]" >&2; exit 2 ;;
esac
PID=${pids[-1]}
for _ in $(seq 300); do (exec 3<>"/dev/tcp/127.0.0.1/$PROXY") 2>/dev/null && break; sleep 0.2; done
AUTH=(-H "Authorization: Bearer not-checked"); PATH_=/
if [ "$ROW" = sessiongate ]; then
  for _ in $(seq 300); do curl -sf "127.0.0.1:$ADMIN/healthz" >/dev/null && break; sleep 0.2; done
  TOKEN=$(curl -sf -XPOST "127.0.0.1:$ADMIN/admin/sessions" \
    -H 'authorization: Bearer dev-admin-token-not-for-production' \
    -d '{"user_id":"u1","business_id":"b1","host_id":"h1","role":"user","ttl_seconds":3600}' \
    | python3 -c 'import sys,json; print(json.load(sys.stdin)["access_token"])')
  AUTH=(-H "Authorization: Bearer $TOKEN")
elif [ "$ROW" = public ]; then PATH_=/public/; fi
URL="http://127.0.0.1:$PROXY$PATH_"
code=$(curl -s -o /dev/null -w '%{http_code}' "${AUTH[@]}" "$URL")
[ "$code" = 200 ] || { echo "$ROW: GET $URL answered $code" >&2; exit 1; }
taskset -c 1 wrk -t1 -c10 -d3s "${AUTH[@]}" "$URL" >/dev/null
callgrind_control -i on "$PID" >/dev/null
taskset -c 1 wrk -t1 -c10 -d"${SECS}s" "${AUTH[@]}" "$URL" > "$WORK/wrk.txt"
callgrind_control -i off "$PID" >/dev/null
callgrind_control -d "$PID" >/dev/null
sleep 1
REQ=$(awk '/requests in/ {print $1}' "$WORK/wrk.txt")
IR=$(awk '/^totals:/ {print $2; exit}' "$OUT/$ROW.out.1")
echo "$ROW: $REQ requests, $IR instructions, $((IR / REQ)) per request (profile: $OUT/$ROW.out.1)"
