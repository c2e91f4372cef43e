#!/usr/bin/env bash
# Builds release binaries and runs the benchmark scenarios; writes bench/RESULTS.md,
# then appends the checkout and search benchmarks' sections to it.
# Options pass through to emporium-bench: bench/run.sh --seconds 5 --rounds 1 --connections 64
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -p emporium -p emporium-bench
target/release/emporium-bench "$@"
target/release/checkout-bench --out bench/RESULTS.md  # appends its section; EMPORIUM_BENCH_DATABASE_URL=postgres://…/postgres runs it on PostgreSQL
target/release/search-bench --out bench/RESULTS.md  # appends its section; --products 100000 --queries 2000 --threads 2
target/release/notify-bench --out bench/RESULTS.md  # appends its section; --events 5000 --smtp-events 1000 --rate 200 --smtp-rate 100 --seconds 10; SMTP needs python3 with aiosmtpd (.ci/.pydeps)
target/release/recs-eval --out bench/RESULTS.md
