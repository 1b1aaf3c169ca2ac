#!/usr/bin/env bash
# Runs the whole test suite on a fresh Debian machine with Rust.
# Installs what the build and the tests need when it is missing (cmake for pingora's
# libz-ng-sys, redis-server for the integration tests), then runs every test target and
# validates deploy/ (scripts/validate-deploy.sh installs its own tools).
set -euo pipefail
cd "$(dirname "$0")/.."

. scripts/need.sh
need cmake redis-server
# The CORS test drives a real browser; without one it is skipped, saying so.
need chromium || echo "chromium could not be installed: tests/cors.rs will skip its browser test"

# The example (the load script's upstream) must build; the criterion benches run once each
# as smoke tests; then unit and integration tests (each integration test starts its own
# redis-server on a free port).
cargo build --examples
cargo test --benches "$@"
cargo test --lib --bins --tests "$@"
./scripts/validate-deploy.sh
# Every fuzz target (fuzz/), built with libFuzzer + ASan, runs FUZZ_SECONDS from the committed
# seeds; a crash fails the run.
FUZZ_SECONDS="${FUZZ_SECONDS:-10}" ./scripts/fuzz.sh
