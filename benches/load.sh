#!/usr/bin/env bash
# Load comparison in one run: direct to the echo upstream, through the gateway on a
# public route (no auth), and through the gateway with a bearer token (verify + cache hit
# + header rewrite). Prints rps and p50/p99 for each, and the ratios.
#
#   benches/load.sh                 # 10 s per scenario, 32 connections
#   DURATION=30s CONNECTIONS=64 benches/load.sh
#
# Everything listens on 127.0.0.1 and stops when the script exits.
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${DURATION:-10s}
CONNECTIONS=${CONNECTIONS:-32}
THREADS=${THREADS:-1}

command -v wrk >/dev/null 2>&1 || {
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq wrk >/dev/null
}
cargo build --release --quiet --bin sessiongate --example echo_upstream

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
UP=$(free_port); PROXY=$(free_port); ADMIN=$(free_port)
WORK=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$WORK"; }
trap cleanup EXIT

./target/release/examples/echo_upstream "127.0.0.1:$UP" >/dev/null & pids+=($!)
sed -e "s/127.0.0.1:8080/127.0.0.1:$PROXY/" -e "s/127.0.0.1:9090/127.0.0.1:$ADMIN/" \
    -e "s#http://127.0.0.1:8081#http://127.0.0.1:$UP#" config/sessiongate.toml > "$WORK/gw.toml"
RUST_LOG=warn ./target/release/sessiongate serve --config "$WORK/gw.toml" >"$WORK/gw.log" 2>&1 & pids+=($!)
for _ in $(seq 100); do curl -sf "127.0.0.1:$ADMIN/healthz" >/dev/null && break; sleep 0.1; done

TOKEN=$(curl -sf -XPOST "127.0.0.1:$ADMIN/admin/sessions" \
  -H 'authorization: Bearer dev-admin-token-not-for-production' \
  -d '{"user_id":"bench-user","business_id":"550e8400-e29b-41d4-a716-446655440000","host_id":"h1","role":"user","ttl_seconds":3600}' \
  | python3 -c 'import sys,json; print(json.load(sys.stdin)["access_token"])')

run() { # name url [header]
  local name=$1 url=$2; shift 2
  wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" --latency "$@" "$url" > "$WORK/$name.txt"
}
echo "machine: $(nproc) cores, $(uname -m); wrk -t$THREADS -c$CONNECTIONS -d$DURATION"
run direct "http://127.0.0.1:$UP/v1/graphql"
run public "http://127.0.0.1:$PROXY/public/v1/graphql"
run auth "http://127.0.0.1:$PROXY/v1/graphql" -H "Authorization: Bearer $TOKEN"

python3 - "$WORK" <<'PY'
import re, sys
work = sys.argv[1]
def us(v):
    n, unit = re.match(r"([\d.]+)(us|ms|s)", v).groups()
    return float(n) * {"us": 1, "ms": 1000, "s": 1e6}[unit]
res = {}
for name in ("direct", "public", "auth"):
    t = open(f"{work}/{name}.txt").read()
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", t).group(1))
    p50 = us(re.search(r"\s50%\s+(\S+)", t).group(1))
    p99 = us(re.search(r"\s99%\s+(\S+)", t).group(1))
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", t)
    res[name] = (rps, p50, p99, int(non2xx.group(1)) if non2xx else 0)
print(f"{'scenario':<28}{'rps':>12}{'p50 µs':>10}{'p99 µs':>10}{'non-2xx':>9}")
for name, label in (("direct", "direct to upstream"), ("public", "gateway, public route"), ("auth", "gateway, authenticated")):
    r = res[name]
    print(f"{label:<28}{r[0]:>12.0f}{r[1]:>10.0f}{r[2]:>10.0f}{r[3]:>9}")
d, p, a = res["direct"], res["public"], res["auth"]
print(f"authenticated / public rps:  {a[0]/p[0]:.3f}   (target >= 0.90)")
print(f"authenticated / direct rps:  {a[0]/d[0]:.3f}")
print(f"p99 added by auth vs public: {a[2]-p[2]:.0f} µs   (target <= 100)")
print(f"p99 added by gateway (auth vs direct): {a[2]-d[2]:.0f} µs")
if a[3] or p[3]:
    sys.exit("non-2xx responses during the run: the figures are not valid")
PY
