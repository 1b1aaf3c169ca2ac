#!/usr/bin/env bash
# Runs every cargo-fuzz target (fuzz/fuzz_targets) for a bounded time, starting from the
# committed seeds (fuzz/seeds/<target>), and prints each target's executions and coverage.
#   scripts/fuzz.sh            # 60 s per target
#   FUZZ_SECONDS=600 scripts/fuzz.sh ws_frame ws_init
# Needs the nightly toolchain (libFuzzer's sanitizer flags) and cargo-fuzz, which it
# installs from crates.io when missing. A crash stops the run and leaves the input in
# fuzz/artifacts/<target>/: add it to the target's unit tests as a regression test.
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${FUZZ_SECONDS:-60}"
command -v cargo-fuzz >/dev/null 2>&1 || cargo install cargo-fuzz --locked
# libFuzzer's flags are unstable: the nightly toolchain when the machine has one, else the
# stable compiler with its unstable features unlocked.
if rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
  tc=(+nightly)
else
  tc=()
  export RUSTC_BOOTSTRAP=1
fi
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  mapfile -t targets < <(cd fuzz && cargo "${tc[@]}" fuzz list)
fi
cd fuzz
cargo "${tc[@]}" fuzz build -O
printf '%-16s %12s %8s %8s\n' target execs cov ft
for t in "${targets[@]}"; do
  mkdir -p "corpus/$t"
  log="$(mktemp)"
  cargo "${tc[@]}" fuzz run -O "$t" "corpus/$t" "seeds/$t" -- \
    -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 >"$log" 2>&1 || {
      grep -m1 -A6 'panicked at' "$log" || true; tail -40 "$log"; echo "FAIL: $t"; exit 1; }
  execs=$(grep -oE 'stat::number_of_executed_units: *[0-9]+' "$log" | grep -oE '[0-9]+$' || echo "?")
  cov=$(grep -oE 'cov: [0-9]+' "$log" | tail -1 | grep -oE '[0-9]+' || echo "?")
  ft=$(grep -oE 'ft: [0-9]+' "$log" | tail -1 | grep -oE '[0-9]+' || echo "?")
  printf '%-16s %12s %8s %8s\n' "$t" "$execs" "$cov" "$ft"
  rm -f "$log"
done
