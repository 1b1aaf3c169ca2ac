#!/usr/bin/env bash
# CPU profile of one proxy under the referee's load shape, as a flame graph.
#
#   benches/profile.sh sessiongate          # authenticated GET / through the release build
#   benches/profile.sh public               # the same gateway, a public route
#   benches/profile.sh pingora              # the bench's bare Pingora pass-through
#   SECONDS_=15 OUT=docs/flamegraphs benches/profile.sh sessiongate
#   PERF=0 benches/profile.sh public        # wrk's figures only, no profiler attached
#   PERF=stat benches/profile.sh sessiongate  # counters per request: task clock, user/system time, context switches
#   BIN=/tmp/sessiongate-old NAME=before benches/profile.sh sessiongate   # another build
#   FREQ=199 CALLGRAPH=dwarf benches/profile.sh sessiongate   # full stacks without frame pointers
#
# Same layout as ../shared/bench/run.sh: the proxy alone on CPU 0 with one worker thread,
# the upstream nginx (one worker, `return 200`) and wrk -t1 -c50 on CPU 1, keep-alive on both
# legs. `perf record -F 999 -g` (cpu-clock, so it works where hardware counters do not)
# samples the proxy while wrk runs; `inferno` turns the samples into `$OUT/<row>.svg` and
# `$OUT/<row>.folded`, and the script prints wrk's figures and the top self-time symbols.
#
# Needs a release build (`cargo build --release`) and, for `pingora`, the bench's baseline
# binary (`$BENCH_TARGET_DIR/release/pingora-baseline`, built by run.sh). Installs nginx,
# wrk and linux-perf with apt, and inferno with cargo, when missing.
set -euo pipefail
cd "$(dirname "$0")/.."
ROW=${1:-sessiongate}
SECS=${SECONDS_:-10}
OUT=${OUT:-target/profile}
CONNS=${CONNS:-50}
BENCH_TARGET_DIR=${BENCH_TARGET_DIR:-/tmp/sessiongate-bench-target}
mkdir -p "$OUT"

need=()
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || need+=(nginx)
command -v wrk >/dev/null 2>&1 || need+=(wrk)
command -v perf >/dev/null 2>&1 || need+=(linux-perf)
if [ ${#need[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi
command -v inferno-flamegraph >/dev/null 2>&1 || cargo install --quiet inferno
NGINX=$(command -v nginx || echo /usr/sbin/nginx)

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
UP=$(free_port); PROXY=$(free_port); ADMIN=$(free_port)
WORK=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; sleep 0.3; rm -rf "$WORK"; }
trap cleanup EXIT

mkdir -p "$WORK/nginx"
sed -e "s#@@DIR@@#$WORK/nginx#g" -e "s#@@PORT@@#$UP#g" \
  ../shared/bench/conf/upstream-nginx.conf.tmpl > "$WORK/nginx/nginx.conf"
taskset -c 1 "$NGINX" -p "$WORK/nginx" -c "$WORK/nginx/nginx.conf" & pids+=($!)

AUTH=()
PATH_=/
case "$ROW" in
  pingora)
    BASELINE_LISTEN=127.0.0.1:$PROXY BASELINE_UPSTREAM=127.0.0.1:$UP BASELINE_THREADS=1 \
      taskset -c 0 "$BENCH_TARGET_DIR/release/pingora-baseline" >"$WORK/proxy.log" 2>&1 & pids+=($!)
    ;;
  sessiongate|public)
    sed -E 's/^(\s*threads\s*=\s*)[0-9]+/\11/' config/sessiongate.toml > "$WORK/gw.toml"
    SESSIONGATE_LISTEN=127.0.0.1:$PROXY SESSIONGATE_ADMIN_LISTEN=127.0.0.1:$ADMIN \
      SESSIONGATE_UPSTREAM=http://127.0.0.1:$UP SESSIONGATE_THREADS=1 \
      taskset -c 0 "${BIN:-./target/release/sessiongate}" serve --config "$WORK/gw.toml" >"$WORK/proxy.log" 2>&1 & pids+=($!)
    ;;
  *) echo "usage: $0 sessiongate|public|pingora" >&2; exit 2 ;;
esac
PID=${pids[-1]}
for _ in $(seq 100); do
  (exec 3<>"/dev/tcp/127.0.0.1/$PROXY") 2>/dev/null && break; sleep 0.1
done
if [ "$ROW" = sessiongate ]; then
  for _ in $(seq 100); do curl -sf "127.0.0.1:$ADMIN/healthz" >/dev/null && break; sleep 0.1; done
  TOKEN=$(curl -sf -XPOST "127.0.0.1:$ADMIN/admin/sessions" \
    -H 'authorization: Bearer dev-admin-token-not-for-production' \
    -d '{"user_id":"u1","business_id":"b1","host_id":"h1","role":"user","ttl_seconds":3600}' \
    | python3 -c 'import sys,json; print(json.load(sys.stdin)["access_token"])')
  AUTH=(-H "Authorization: Bearer $TOKEN")
elif [ "$ROW" = public ]; then
  PATH_=/public/
  AUTH=(-H "Authorization: Bearer not-checked-on-a-public-route")
else
  AUTH=(-H "Authorization: Bearer not-checked-by-the-baseline")
fi
URL="http://127.0.0.1:$PROXY$PATH_"
code=$(curl -s -o /dev/null -w '%{http_code}' "${AUTH[@]}" "$URL")
[ "$code" = 200 ] || { echo "$ROW: GET $URL answered $code" >&2; cat "$WORK/proxy.log" >&2; exit 1; }

# Warm up, then sample only the timed window.
taskset -c 1 wrk -t1 -c"$CONNS" -d3s "${AUTH[@]}" "$URL" >/dev/null
if [ "${PERF:-1}" = stat ]; then
  # Counters instead of samples: user and kernel CPU time (/proc, every thread of the
  # proxy) and context switches (perf stat), per request.
  ticks() { awk '{print $14, $15}' "/proc/$PID/stat"; }
  perf stat -e task-clock,context-switches -p "$PID" -o "$WORK/stat.txt" -- sleep "$SECS" 2>/dev/null &
  PERF=$!
  read -r u0 s0 < <(ticks)
  taskset -c 1 wrk -t1 -c"$CONNS" -d"${SECS}s" "${AUTH[@]}" "$URL" > "$WORK/wrk.txt"
  read -r u1 s1 < <(ticks)
  wait "$PERF" || true
  reqs=$(awk '/requests in/ {print $1}' "$WORK/wrk.txt")
  hz=$(getconf CLK_TCK)
  grep -E 'Requests/sec' "$WORK/wrk.txt"
  awk -v r="$reqs" -v u=$((u1 - u0)) -v s=$((s1 - s0)) -v hz="$hz" 'BEGIN {
      printf "user   %8.2f us per request\nkernel %8.2f us per request\n", u / hz * 1e6 / r, s / hz * 1e6 / r }
    /context-switches/ { gsub(",", "", $1); printf "context switches %.4f per request\n", $1 / r }' "$WORK/stat.txt"
  exit 0
fi
if [ "${PERF:-1}" = strace ]; then
  # Syscalls per request (strace slows the proxy; the counts, not the times, are the point).
  timeout -s INT "$SECS" strace -f -c -p "$PID" -o "$WORK/strace.txt" 2>/dev/null &
  ST=$!
  sleep 1
  taskset -c 1 wrk -t1 -c"$CONNS" -d"$((SECS - 2))s" "${AUTH[@]}" "$URL" > "$WORK/wrk.txt"
  wait "$ST" || true
  reqs=$(awk '/requests in/ {print $1}' "$WORK/wrk.txt")
  cat "$WORK/strace.txt"; echo "requests: $reqs"
  exit 0
fi
if [ "${PERF:-1}" = 0 ]; then
  # Throughput only (no sampling overhead): wrk's figures for this row.
  taskset -c 1 wrk -t1 -c"$CONNS" -d"${SECS}s" --latency "${AUTH[@]}" "$URL" | grep -E 'Requests/sec|  50%|  99%|Non-2xx'
  exit 0
fi
perf record -F ${FREQ:-999} -e cpu-clock --call-graph ${CALLGRAPH:-fp} -p "$PID" -o "$WORK/perf.data" -- sleep "$SECS" 2>/dev/null &
PERF=$!
taskset -c 1 wrk -t1 -c"$CONNS" -d"${SECS}s" --latency "${AUTH[@]}" "$URL" | tee "$WORK/wrk.txt" | grep -E 'Requests/sec|99%|50%'
wait "$PERF" || true
NAME=${NAME:-$ROW}
perf script -i "$WORK/perf.data" 2>/dev/null | inferno-collapse-perf > "$OUT/$NAME.folded"
inferno-flamegraph --title "$NAME: GET $PATH_ (wrk -c$CONNS, one pinned CPU)" < "$OUT/$NAME.folded" > "$OUT/$NAME.svg"
echo "flame graph: $OUT/$NAME.svg"
echo "top self time:"
perf report -i "$WORK/perf.data" --no-children --sort symbol --stdio 2>/dev/null \
  | grep -E '^ +[0-9.]+%' | head -25
