#!/usr/bin/env bash
# Sets up and runs every test: formatting, clippy, unit and multi-process
# tests (release build), the loom model, and a smoke run of the benchmarks.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR=never

bash scripts/setup.sh

echo "== fmt"
cargo fmt --all -- --check
echo "== clippy"
cargo clippy --workspace --all-targets --release -- -D warnings

# Huge pages for the huge-page tests: mount hugetlbfs and reserve pages, and
# give them back on exit.
source scripts/hugepages.sh
hugepages_reserve 160
trap hugepages_release EXIT

echo "== tests"
# Runs as root: record/tests mounts a small tmpfs for the full-disk test.
cargo test --workspace --release -- --test-threads=2

echo "== loom model"
RUSTFLAGS="--cfg loom" LOOM_MAX_PREEMPTIONS=2 CARGO_TARGET_DIR=target/loom \
  cargo test -p shm-proto --release --test loom

echo "== benchmark smoke"
./target/release/shmcast-bench --quick
cargo bench -p shm-proto --bench ring -- --test

echo "== python"
bash scripts/python-test.sh --bench
