#!/usr/bin/env bash
# Runs the gateway on a fresh Debian machine with Rust: installs what the build needs when
# it is missing (cmake, for pingora's libz-ng-sys), then `cargo run --release -- serve` with
# any arguments given (default: config/sessiongate.toml — in-memory store, development
# credentials, loopback listeners only).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/need.sh
need cmake
exec cargo run --release -- serve "$@"
