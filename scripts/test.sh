#!/usr/bin/env bash
# Sets up and runs every test: formatting, clippy, shellcheck, rustdoc,
# unit and multi-process tests (release build), the loom model, and a smoke
# run of the benchmarks.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR=never

bash scripts/setup.sh

echo "== fmt"
cargo fmt --all -- --check
echo "== clippy"
cargo clippy --workspace --all-targets --release -- -D warnings

echo "== shellcheck"
# Every shell script of the repository: *.sh files and files with a shell #! line.
scripts=()
while IFS= read -r -d '' f; do
  [[ -f $f ]] || continue
  if [[ $f == *.sh ]] || head -n 1 "$f" | grep -qE '^#!.*[/ ](ba|da)?sh( |$)'; then
    scripts+=("$f")
  fi
done < <(git ls-files -z --cached --others --exclude-standard)
echo "shellcheck: ${#scripts[@]} scripts"
shellcheck -x "${scripts[@]}"

echo "== rustdoc"
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --release

# Huge pages for the huge-page tests: mount hugetlbfs and reserve pages, and
# give them back on exit.
source scripts/hugepages.sh
hugepages_reserve 160
trap hugepages_release EXIT

echo "== tests"
cargo test --workspace --release --exclude gst-plugin-shmcast -- --test-threads=2

# The GStreamer elements through the real gst-launch-1.0 / gst-inspect-1.0
# (GST_PLUGIN_PATH=target/release), with the workspace binaries built above
# and real receivers (ffmpeg SRT, gst-rtsp-server RECORD, ffprobe).
echo "== GStreamer plugin"
cargo build --release -p gst-plugin-shmcast
cargo test --release -p gst-plugin-shmcast -- --test-threads=2

echo "== web page in a real browser"
# The browser test's own virtualenv (Selenium only), separate from any other.
web_browser_venv() {
  local venv=target/venv-web
  [[ -x $venv/bin/python ]] || python3 -m venv "$venv"
  "$venv/bin/python" -c 'import selenium' 2>/dev/null || "$venv/bin/pip" install -q 'selenium>=4.20,<5'
}
web_browser_venv
target/venv-web/bin/python web/tests/browser.py target/release target/web-browser.png

echo "== loom model"
RUSTFLAGS="--cfg loom" LOOM_MAX_PREEMPTIONS=2 CARGO_TARGET_DIR=target/loom \
  cargo test -p shm-proto --release --test loom

echo "== benchmark smoke"
./target/release/shmcast-bench --quick
./target/release/shmcast-gst-bench --secs 0.5 --sizes 640x360 --no-stall
cargo bench -p shm-proto --bench ring -- --test

echo "== python"
bash scripts/python-test.sh --bench
