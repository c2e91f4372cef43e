#!/usr/bin/env bash
# Builds release binaries and runs the benchmark scenarios; writes bench/RESULTS.md.
# Options pass through: bench/run.sh --seconds 5 --rounds 1 --connections 64
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -p emporium -p emporium-bench
exec target/release/emporium-bench "$@"
